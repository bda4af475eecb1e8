"""The Kafka client settings every test turns off or cannot reach: the idempotent producer, TLS
and SASL. What can be shown here is shown on the wire, against real sockets.

Not tested end to end: no broker here speaks TLS or SASL (Tansu 0.6 has neither; real Kafka
runs only in docker-compose.yml). So no test completes a TLS handshake, verifies a broker's
certificate, or logs in with SCRAM; the tests below show that each client (producer, runtime
consumer, reader, admin) opens its connections with TLS when told to, that a SASL client asks
the broker for a SASL login with the configured mechanism, and that the credentials come from the
settings and their secret files. A private CA and a client certificate are tested with a real
handshake against a TLS listener whose certificates a test CA signed. Nor is the idempotent
producer's exactly-once produce tested:
Tansu refuses its InitProducerId, so what is tested is that it is switched on by default and
fails with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess

import pytest
from aiokafka.errors import KafkaConnectionError

from pydantic import SecretStr

from ragstream.config import Settings
from ragstream.errors import TransportUnavailable
from ragstream.publisher import Publisher
from ragstream.stack import Tansu
from ragstream.transport.base import OutMessage
from ragstream.transport.kafka import (IdempotenceRefused, KafkaConsumer, KafkaProducer,
                                       KafkaReader, connection_options, ensure_topics)
from tests.helpers import read_topic


async def test_the_idempotent_producer_is_on_by_default_and_tansu_refuses_it_clearly(
        tansu: Tansu):
    settings = Settings(kafka_bootstrap=tansu.bootstrap)
    assert settings.kafka_idempotence  # production keeps it on unless told otherwise
    producer = KafkaProducer(settings)
    # aiokafka builds its transaction manager (producer id and sequence numbers) only then
    assert producer._producer._txn_manager is not None
    with pytest.raises(IdempotenceRefused, match="RAGSTREAM_KAFKA_IDEMPOTENCE=false"):
        await producer.start()
    with pytest.raises(IdempotenceRefused, match=tansu.bootstrap):  # the CLI's path too
        async with Publisher(settings):
            pass

    # the same broker with it off: the producer starts and its message arrives
    plain = settings.model_copy(update={"kafka_idempotence": False})
    producer = KafkaProducer(plain)
    assert producer._producer._txn_manager is None
    await producer.start()
    try:
        await producer.send_all([OutMessage("idempotence.check", b"k", b"v", [])])
    finally:
        await producer.stop()
    assert [r.value for r in await read_topic(plain, "idempotence.check", timeout=0.5)] == [b"v"]


def test_sasl_ssl_settings_and_their_secret_file_build_the_client_options(tmp_path):
    password_file = tmp_path / "kafka_password"
    password_file.write_text("s3cret-from-a-file\n")
    settings = Settings.from_env({
        "RAGSTREAM_KAFKA_BOOTSTRAP": "kafka-0.kafka:9093",
        "RAGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RAGSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "RAGSTREAM_KAFKA_USERNAME": "ragstream",
        "RAGSTREAM_KAFKA_PASSWORD_FILE": str(password_file),
    })
    options = connection_options(settings)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "kafka-0.kafka:9093",
                       "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "ragstream",
                       "sasl_plain_password": "s3cret-from-a-file"}
    # the broker's certificate is verified, host name included
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())

    plain = connection_options(Settings(kafka_bootstrap="127.0.0.1:9092"))
    assert plain == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


class FirstBytes:
    """A TCP listener that keeps the first bytes each client sends, then hangs up: what a
    client puts on the wire before any broker answers."""

    def __init__(self):
        self.seen: list[bytes] = []

    async def __aenter__(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                self.seen.append(await asyncio.wait_for(reader.read(5), 5))
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()


async def _noop(_) -> None:
    pass


def _clients(settings: Settings) -> dict:
    """How each Kafka client of the project starts (and stops, where it started)."""
    async def producer():
        p = KafkaProducer(settings)
        try:
            await p.start()
        finally:
            await p.stop()

    async def consumer():
        c = KafkaConsumer(settings, ["documents.v1"], "tls-check", _noop, _noop)
        try:
            await c.start()
        finally:
            await c.stop()

    async def reader():
        r = KafkaReader(settings, ["documents.v1"], None, from_beginning=True)
        await r.start()  # stops itself when its start fails
        await r.stop()

    async def admin():
        await ensure_topics(settings, ["documents.v1"], 1)

    return {"producer": producer, "consumer": consumer, "reader": reader, "admin": admin}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_every_kafka_client_opens_its_connections_with_tls(protocol):
    sasl = {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_username": "u",
            "kafka_password": "p"} if protocol == "SASL_SSL" else {}
    listener = FirstBytes()
    async with listener as address:
        settings = Settings(kafka_bootstrap=address, kafka_security_protocol=protocol,
                            kafka_idempotence=False, **sasl)
        for name, start in _clients(settings).items():
            before = len(listener.seen)
            with pytest.raises((KafkaConnectionError, TransportUnavailable)):
                await asyncio.wait_for(start(), 30)
            # a TLS record of type handshake (0x16, version 3.x): the ClientHello, not a
            # Kafka request in the clear
            opened = listener.seen[before:]
            assert opened and all(b[:2] == b"\x16\x03" for b in opened), (name, opened)

        # the control: a PLAINTEXT client's first bytes are a Kafka request's length prefix
        before = len(listener.seen)
        plain = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT",
                                            "kafka_sasl_mechanism": None})
        with pytest.raises(TransportUnavailable):  # the producer's start says the broker is down
            await asyncio.wait_for(_clients(plain)["producer"](), 30)
        assert listener.seen[before:] and listener.seen[before][:2] == b"\x00\x00"


async def test_a_sasl_client_asks_for_its_mechanism_and_never_goes_on_without_it(tansu, caplog):
    """Tansu has no SASL: it refuses the mechanism the client names in its SaslHandshake
    (error 33), and every client stops there instead of talking unauthenticated."""
    settings = Settings(kafka_bootstrap=tansu.bootstrap, kafka_security_protocol="SASL_PLAINTEXT",
                        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_username="u",
                        kafka_password="p", kafka_idempotence=False)
    for name, start in _clients(settings).items():
        caplog.clear()
        with pytest.raises((KafkaConnectionError, TransportUnavailable)):
            await asyncio.wait_for(start(), 30)
        assert "UnsupportedSaslMechanismError" in caplog.text, name
    # the same broker, the same clients, without SASL: they start
    plain = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT",
                                        "kafka_sasl_mechanism": None})
    await ensure_topics(plain, ["documents.v1"], 1)
    for name, start in _clients(plain).items():
        await asyncio.wait_for(start(), 30)


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    """A private CA, a broker certificate for 127.0.0.1 and a client certificate it signed, the
    client's key encrypted with a password."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=ragstream test CA", cwd=tmp_path)
    for name, usage in (("broker", "serverAuth"), ("client", "clientAuth")):
        (tmp_path / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=tmp_path)
    _openssl("pkcs8", "-topk8", "-in", "client.key", "-out", "client.enc.key", "-v2", "aes256",
             "-passout", "pass:key-secret", cwd=tmp_path)
    return tmp_path


class TlsBroker:
    """A TLS listener with the test CA's broker certificate: it records the first bytes of
    every connection whose handshake completed (a Kafka request's length prefix) and closes."""

    def __init__(self, pki, require_client_cert: bool):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki / "broker.pem", pki / "broker.key")
        if require_client_cert:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(pki / "ca.pem")
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        async def handle(reader, writer):
            with contextlib.suppress(Exception):
                self.requests.append(await asyncio.wait_for(reader.read(4), 5))
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.context)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()


async def _requests_sent(broker: TlsBroker, settings: Settings) -> list[bytes]:
    """What the producer got through to the broker over TLS before its start gave up."""
    before = len(broker.requests)
    with pytest.raises((KafkaConnectionError, TransportUnavailable)):
        await asyncio.wait_for(_clients(settings)["producer"](), 30)
    return broker.requests[before:]


async def test_a_broker_signed_by_a_private_ca_is_trusted_only_with_that_ca(pki):
    broker = TlsBroker(pki, require_client_cert=False)
    async with broker as address:
        settings = Settings(kafka_bootstrap=address, kafka_security_protocol="SSL",
                            kafka_idempotence=False)
        # the system's CAs do not know the test CA: the client refuses the broker
        assert await _requests_sent(broker, settings) == []
        trusted = settings.model_copy(update={"kafka_ssl_cafile": pki / "ca.pem"})
        sent = await _requests_sent(broker, trusted)
        assert sent and all(r[:2] == b"\x00\x00" for r in sent)  # Kafka requests, inside TLS


async def test_a_broker_that_requires_a_client_certificate_gets_the_configured_one(pki):
    broker = TlsBroker(pki, require_client_cert=True)
    async with broker as address:
        settings = Settings(kafka_bootstrap=address, kafka_security_protocol="SASL_SSL",
                            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_username="u",
                            kafka_password="p", kafka_idempotence=False,
                            kafka_ssl_cafile=pki / "ca.pem")
        assert await _requests_sent(broker, settings) == []  # no certificate: refused
        mutual = settings.model_copy(update={
            "kafka_ssl_certfile": pki / "client.pem", "kafka_ssl_keyfile": pki / "client.enc.key",
            "kafka_ssl_key_password": SecretStr("key-secret")})
        assert await _requests_sent(broker, mutual)


def test_tls_files_without_tls_or_a_key_without_its_certificate_are_refused(tmp_path):
    with pytest.raises(ValueError, match="KAFKA_SSL_CAFILE is set, but .*PLAINTEXT"):
        Settings(kafka_ssl_cafile=tmp_path / "ca.pem")
    with pytest.raises(ValueError, match="needs its certificate"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=tmp_path / "client.key")
