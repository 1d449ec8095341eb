"""pmq's Lua scripts (``pmq_core/lua/``): found as package data, each with a
header naming its KEYS and ARGV, and called with arguments of that shape."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import attrs
import pytest

from pmq_core import dispatch
from pmq_core.keys import Keys, message

KEYS = Keys("p:")
JOBS = 3


def lua_files() -> dict[str, str]:
    """The scripts the installed package ships, by name."""
    folder = resources.files("pmq_core").joinpath(dispatch.LUA_DIR)
    return {entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
            for entry in folder.iterdir() if entry.name.endswith(".lua")}


def header(source: str) -> list[str]:
    """The comment lines the file starts with, without their ``--``."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return lines


def layout(source: str, part: str) -> tuple[int, int]:
    """How many fixed values the header names for KEYS or ARGV, and how many
    per job (``KEYS: a, b; per job: c, d``)."""
    (line,) = [line for line in header(source) if line.startswith(f"{part}:")]
    fixed, _, per_job = line.removeprefix(f"{part}:").partition("per job:")
    return count_names(fixed), count_names(per_job)


def count_names(names: str) -> int:
    return len([name for name in names.strip(" ;").split(",") if name.strip()])


def rows(n: int) -> list[dict[str, Any]]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [{"id": uuid.uuid4(), "queue_name": f"q{i}", "priority": 100 - i, "attempt_count": i,
             "created_at": start + timedelta(seconds=i)} for i in range(n)]


def one_queue(n: int) -> list[dict[str, Any]]:
    return [{**row, "queue_name": "q"} for row in rows(n)]


#: The calls built for ``n`` jobs of one queue, by script.
BUILT = {
    "push": lambda n: dispatch.push_calls(KEYS, one_queue(n)),
    "mark": lambda n: dispatch.mark_calls(KEYS, [dispatch.Mark(uuid.uuid4(), "q", "running") for _ in range(n)]),
    "dead_push": lambda n: dispatch.dead_calls(KEYS, [("q", uuid.uuid4()) for _ in range(n)]),
    "dead_remove": lambda n: dispatch.dead_calls(KEYS, [("q", uuid.uuid4()) for _ in range(n)]),
}


def test_the_package_ships_exactly_the_scripts_it_binds():
    assert set(lua_files()) == {field.name for field in attrs.fields(dispatch.Scripts)} == set(BUILT)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_each_script_starts_with_a_header_naming_its_keys_and_argv(name):
    source = lua_files()[name]
    lines = header(source)
    assert lines[0].startswith(f"{name}.lua: ")  # what it does, in its first line
    assert [line.split(":")[0] for line in lines if line.startswith(("KEYS:", "ARGV:"))] == ["KEYS", "ARGV"]
    assert any(line.startswith("Returns ") for line in lines)
    assert dispatch.lua_source(name) == source


@pytest.mark.parametrize("name", sorted(BUILT))
def test_the_arguments_built_for_a_script_have_the_shape_its_header_names(name):
    source = lua_files()[name]
    (fixed_keys, keys_per_job), (fixed_args, args_per_job) = layout(source, "KEYS"), layout(source, "ARGV")
    assert keys_per_job and args_per_job
    assert BUILT[name](0) == []  # no job, no call
    for n in (1, JOBS):
        ((script_keys, args),) = BUILT[name](n)  # jobs of one queue: one call
        assert (len(script_keys), len(args)) == (fixed_keys + n * keys_per_job, fixed_args + n * args_per_job)
        assert all(key.startswith("p:") for key in script_keys)


def test_push_puts_each_message_in_its_band_most_urgent_and_oldest_first():
    jobs = one_queue(3)
    jobs[0]["priority"] = jobs[1]["priority"] = 20
    jobs[2]["priority"] = 200
    jobs[0]["created_at"] += timedelta(hours=1)  # same priority, enqueued later: pushed after
    ((script_keys, args),) = dispatch.push_calls(KEYS, reversed(jobs))
    order = [jobs[1], jobs[0], jobs[2]]
    assert script_keys == [key for job, band in zip(order, ["high", "high", "low"], strict=True)
                           for key in (KEYS.band("q", band), KEYS.job("q", job["id"]))]
    assert args[2::4] == [message(job["id"], job["attempt_count"]) for job in order]


def test_a_batch_of_several_queues_is_pushed_one_call_per_queue_in_the_same_order():
    jobs = rows(4)
    for job, queue in zip(jobs, ["a", "b", "a", "b"], strict=True):
        job["queue_name"] = queue
    calls = dispatch.push_calls(KEYS, jobs)
    assert [args[3::4] for _keys, args in calls] == [["b", "b"], ["a", "a"]]  # most urgent queue first
    assert [args[2::4] for _keys, args in calls] == [
        [message(jobs[i]["id"], jobs[i]["attempt_count"]) for i in (3, 1)],
        [message(jobs[i]["id"], jobs[i]["attempt_count"]) for i in (2, 0)]]


def test_without_status_hashes_push_names_only_the_band_lists_and_mark_has_nothing_to_do():
    quiet = Keys("p:", status_hashes=False)
    jobs = one_queue(JOBS)
    ((script_keys, args),) = dispatch.push_calls(quiet, jobs)
    assert script_keys == [quiet.band("q", "normal")] * JOBS
    assert args[1] == 1 and len(args) == 2 + 4 * JOBS  # one key per job, the same arguments
    assert dispatch.mark_calls(quiet, [dispatch.Mark("a", "q", "running")]) == []


def test_mark_leaves_a_field_it_is_not_given_as_it_is():
    ((_, args),) = dispatch.mark_calls(KEYS, [dispatch.Mark("a", "q", "failed", attempt=0, error="boom"),
                                              dispatch.Mark("b", "q", "running", worker="w1")])
    assert args[2:] == ["failed", 0, "", "boom", "running", "", "w1", ""]


def test_dead_letters_go_to_their_own_queues_list():
    job_id = uuid.uuid4()
    assert dispatch.dead_calls(KEYS, [("mail", job_id), ("hooks", "x"), ("mail", "y")]) == [
        ([KEYS.dead("mail")] * 2, [str(job_id), "y"]), ([KEYS.dead("hooks")], ["x"])]
