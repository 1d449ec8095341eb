"""pmq-webhook: the ``webhook:process`` job type, signed HTTP POST deliveries.

Enqueue a delivery from an application::

    from pmq_core import Client

    Client().enqueue("webhook:process", {
        "url": "https://example.com/hooks/orders",
        "body": {"order": 42, "state": "paid"},
        "event": "order.paid",
    })

Workers sign each request with the ``secret`` of the plugin's settings
(:class:`WebhookSettings`, e.g. ``PMQ_WEBHOOK_SECRET``); a receiver checks it
with :func:`verify_signature`.
"""

from pmq_webhook.delivery import NAME, VERSION, WebhookPayload, WebhookSettings, job_type
from pmq_webhook.signing import sign, verify_signature

__version__ = VERSION

__all__ = ["NAME", "WebhookSettings", "WebhookPayload", "__version__", "job_type", "sign", "verify_signature"]
