"""oslo.messaging's RabbitMQ driver on a Rust engine.

Installing this package registers the ``rabbitrs`` driver with oslo.messaging. A service
switches to it by changing the scheme of its transport URL, ``rabbit://`` to ``rabbitrs://``
(same hosts, credentials, virtual host and query options); everything above the driver stays
oslo.messaging's own code.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
