"""TLS material for ``requests`` sessions: PEM text from Secrets written to private temporary files.

requests (and OpenSSL under it) read CA bundles and client certificates from files only. The Prometheus client
and the MLflow registry client both take PEM text read from Secrets; this is where it becomes files, readable by
the operator's user only, removed when the client closes.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile


class TlsFiles:
    """The ``verify`` and ``cert`` arguments of a ``requests`` session, from PEM text or file paths."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._tempdir: str | None = None

    def verify(self, *, insecure_skip_verify: bool, ca_pem: str | None, ca_file: str | None = None) -> bool | str:
        """False (no verification), a CA bundle file, or True (the system's roots)."""
        if insecure_skip_verify:
            return False
        if ca_pem is not None:
            return self._write_private("ca.pem", ca_pem)
        if ca_file is not None:
            return ca_file
        return True

    def client_cert(
        self,
        *,
        cert_pem: str | None,
        key_pem: str | None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> tuple[str, str] | None:
        """The (certificate, key) files for mutual TLS, or None."""
        if cert_pem is not None and key_pem is not None:
            return (self._write_private("client.crt", cert_pem), self._write_private("client.key", key_pem))
        if cert_file is not None and key_file is not None:
            return (cert_file, key_file)
        return None

    def remove(self) -> None:
        """Delete the files written (idempotent)."""
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def _write_private(self, name: str, pem: str) -> str:
        if self._tempdir is None:
            self._tempdir = tempfile.mkdtemp(prefix=self._prefix)
        path = os.path.join(self._tempdir, name)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(pem)
        return path
