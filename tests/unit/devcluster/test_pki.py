from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelmonitor_sandbox.devcluster import pki


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_and_carry_the_right_identities(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path)
    ca = _cert(keys.ca_cert)
    for path in (keys.serving_cert, keys.admin.cert, keys.controller_manager.cert, keys.scheduler.cert):
        cert = _cert(path)
        assert cert.issuer == ca.subject
        public_key = ca.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert cert.signature_hash_algorithm is not None
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))

    serving = _cert(keys.serving_cert)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage

    admin = _cert(keys.admin.cert)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    cm = _cert(keys.controller_manager.cert)
    assert cm.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-controller-manager"
    assert (keys.admin.key.stat().st_mode & 0o777) == 0o600


def test_kubeconfig_points_at_the_server_with_the_identity(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path)
    config = yaml.safe_load(pki.kubeconfig("https://127.0.0.1:6443", keys.ca_cert, keys.admin))
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"]["client-certificate"] == str(keys.admin.cert)
    assert config["current-context"] == config["contexts"][0]["name"]
