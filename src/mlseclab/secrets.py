"""The lab's secrets: a CA, node certificates, API keys and service passwords.

Everything lives under ``.mlseclab/<lab>/secrets/`` (0700 directories, 0600
files), is generated once and kept, so that re-running converges. Nothing here
is ever printed or put in the inventory: roles read these files by path (with
``no_log``), and clients get only what they need (a hash, a certificate).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlseclab.state import LabHome, write_private
from mlseclab.topology import Topology

CA_DAYS = 3650
CERT_DAYS = 825

#: service passwords and keys, one file each under secrets/
SERVICE_SECRETS = (
    "inference-api-key",  # callers of the model server (gateway, rag)
    "db-owner-password",  # owns the schema; never used by an application
    "db-ingest-password",  # writes documents and embeddings
    "db-query-password",  # read-only: what the RAG service uses
    "rag-signing-key",  # HMAC key of the principal assertions the gateway signs for rag-01
)


@dataclass(frozen=True)
class SecretPaths:
    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    def node_key(self, node: str) -> Path:
        return self.root / "nodes" / f"{node}.key"

    def node_cert(self, node: str) -> Path:
        return self.root / "nodes" / f"{node}.crt"

    def service(self, name: str) -> Path:
        return self.root / name

    def client_key(self, client: str) -> Path:
        return self.root / "clients" / f"{client}.key"

    @property
    def client_hashes(self) -> Path:
        """sha256 of each client key with its rate limit: what the gateway stores."""
        return self.root / "clients" / "hashed.json"


def paths(home: LabHome) -> SecretPaths:
    return SecretPaths(home.root / "secrets")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def ensure_ca(p: SecretPaths, lab: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if p.ca_key.exists() and p.ca_cert.exists():
        return _load_key(p.ca_key), x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlseclab"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mlseclab {lab} lab CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    write_private(p.ca_key, _pem_key(key))
    write_private(p.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key, cert


def _node_cert_current(p: SecretPaths, node: str, sans: set[str]) -> bool:
    if not (p.node_key(node).exists() and p.node_cert(node).exists()):
        return False
    cert = x509.load_pem_x509_certificate(p.node_cert(node).read_bytes())
    if cert.not_valid_after_utc - _now() < datetime.timedelta(days=30):
        return False
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in ext.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in ext.get_values_for_type(x509.IPAddress)}
    return have == sans


def ensure_node_cert(
    p: SecretPaths,
    node: str,
    dns: list[str],
    ips: list[str],
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> bool:
    """A server+client certificate for ``node``; True when it was (re)issued."""
    if _node_cert_current(p, node, set(dns) | set(ips)):
        return False
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(p.node_key(node), _pem_key(key))
    write_private(p.node_cert(node), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _ensure_token(path: Path, nbytes: int = 32) -> bool:
    if path.exists() and path.read_text(encoding="utf-8").strip():
        return False
    write_private(path, secrets.token_urlsafe(nbytes) + "\n")
    return True


def hash_key(key: str) -> str:
    return hashlib.sha256(key.strip().encode()).hexdigest()


def ensure_secrets(topo: Topology, home: LabHome) -> list[str]:
    """Generate whatever is missing; return what was created (names, never values)."""
    p = paths(home)
    for d in (p.root, p.root / "nodes", p.root / "clients"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.chmod(0o700)
    created: list[str] = []
    had_ca = p.ca_cert.exists()
    ca = ensure_ca(p, topo.spec.lab.name)
    if not had_ca:
        created.append("lab CA")
    domain = topo.spec.lab.domain
    for node in topo.nodes.values():
        dns = [f"{node.name}.{domain}", node.name]
        if ensure_node_cert(p, node.name, dns, list(node.addresses), ca):
            created.append(f"certificate {node.name}")
    for name in SERVICE_SECRETS:
        if _ensure_token(p.service(name)):
            created.append(name)
    hashed = {}
    # the spec's clients; a key of a client the spec no longer declares stays on disk
    # but leaves the gateway's list
    for client, declared in topo.spec.clients.items():
        if _ensure_token(p.client_key(client)):
            created.append(f"api key {client}")
        hashed[client] = {
            "sha256": hash_key(p.client_key(client).read_text(encoding="utf-8")),
            "rate_per_minute": declared.rate_per_minute,
            "groups": sorted(set(declared.groups)),
            "embeddings": declared.embeddings,
        }
    text = json.dumps(hashed, indent=2, sort_keys=True) + "\n"
    if not p.client_hashes.exists() or p.client_hashes.read_text(encoding="utf-8") != text:
        write_private(p.client_hashes, text)
    return created
