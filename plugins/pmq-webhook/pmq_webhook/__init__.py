"""pmq-webhook: the ``webhook:process`` job type, signed HTTP POST deliveries.

Enqueue a delivery from an application::

    from pmq_core import Client

    Client().enqueue("webhook:process", {
        "url": "https://example.com/hooks/orders",
        "body": {"order": 42, "state": "paid"},
        "event": "order.paid",
    })

Workers sign each request with the secret in ``PMQ_WEBHOOK_SECRET``; a
receiver checks it with :func:`verify_signature`.
"""

from pmq_webhook.delivery import NAME, VERSION, WebhookConfig, WebhookPayload, job_type
from pmq_webhook.signing import sign, verify_signature

__version__ = VERSION

__all__ = ["NAME", "WebhookConfig", "WebhookPayload", "__version__", "job_type", "sign", "verify_signature"]
