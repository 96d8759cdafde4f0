"""Certificates and keys for the local control plane, generated with `cryptography` (no openssl needed).

One CA signs: the kube-apiserver serving certificate (SANs 127.0.0.1, localhost and the in-cluster names), and a
client certificate per identity. Identities follow Kubernetes' bootstrap RBAC: `admin` in `system:masters`
(kubectl, tests), `system:kube-controller-manager` and `system:kube-scheduler` (their built-in ClusterRoles).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A kubeconfig user: certificate and key files."""

    name: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_pub: Path
    admin: ClientIdentity
    controller_manager: ClientIdentity
    scheduler: ClientIdentity


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate | None,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server_sans: list[str] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject if ca_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    usages = []
    if server_sans is not None:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        names: list[x509.GeneralName] = []
        for san in server_sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate(directory: Path) -> Pki:
    """Create a fresh CA and every certificate the sandbox needs under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(_name("modelmonitor-sandbox-ca"), ca_key, None, ca_key, is_ca=True)
    _write_key(directory / "ca.key", ca_key)
    _write_cert(directory / "ca.crt", ca_cert)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans = [
        "127.0.0.1",
        "localhost",
        "10.96.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    serving = _issue(_name("kube-apiserver"), serving_key, ca_cert, ca_key, server_sans=sans)
    _write_key(directory / "apiserver.key", serving_key)
    _write_cert(directory / "apiserver.crt", serving)

    # Service-account tokens are signed with RSA (the widest-supported JWT algorithm for the issuer).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def client(file_stem: str, common_name: str, organization: str | None) -> ClientIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(common_name, organization), key, ca_cert, ca_key, client=True)
        _write_key(directory / f"{file_stem}.key", key)
        _write_cert(directory / f"{file_stem}.crt", cert)
        return ClientIdentity(common_name, directory / f"{file_stem}.crt", directory / f"{file_stem}.key")

    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
        admin=client("admin", "admin", "system:masters"),
        controller_manager=client("controller-manager", "system:kube-controller-manager", None),
        scheduler=client("scheduler", "system:kube-scheduler", None),
    )


def kubeconfig(server: str, ca_cert: Path, identity: ClientIdentity, context: str = "modelmonitor-sandbox") -> str:
    """A kubeconfig (YAML text) for one identity, with file references to the certificates."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority: {ca_cert}\n"
        f"users:\n- name: {identity.name}\n  user:\n    client-certificate: {identity.cert}\n"
        f"    client-key: {identity.key}\n"
        f"contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {identity.name}\n"
        f"current-context: {context}\n"
    )
