"""Credentials and TLS settings for the HTTP services a monitor talks to (Prometheus, the MLflow registry), read
from Secrets in the monitor's namespace. One definition, so both connections take the same fields and the
operator resolves them in one place (`modelmonitor.adapters.connections`)."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from modelmonitor.api.common import DNS_SUBDOMAIN_PATTERN, ApiModel, cel, field_error, k8s


class SecretKeyRef(ApiModel):
    """A key of a Secret in the monitor's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")
    key: str = Field(
        default="token", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret."
    )


class CASecretRef(ApiModel):
    """A Secret holding the CA bundle (PEM) that signed the server's certificate."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")
    key: str = Field(
        default="ca.crt", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the PEM bundle."
    )


class BasicAuthSecretRef(ApiModel):
    """A Secret holding a username and password for HTTP basic authentication."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")
    username_key: str = Field(
        default="username", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the username."
    )
    password_key: str = Field(
        default="password", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the password."
    )


class CertSecretRef(ApiModel):
    """A Secret holding a client certificate and its private key (PEM), e.g. a kubernetes.io/tls Secret."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")
    cert_key: str = Field(
        default="tls.crt", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the certificate."
    )
    key_key: str = Field(
        default="tls.key", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the private key."
    )


class HttpAuth(ApiModel):
    """Credentials read from Secrets in the monitor's namespace. At most one method."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))",
                    "set at most one of bearerTokenSecretRef and basicAuthSecretRef",
                )
            ]
        )
    )

    bearer_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Send `Authorization: Bearer <token>` with the token from this Secret key."
    )
    basic_auth_secret_ref: BasicAuthSecretRef | None = Field(
        default=None, description="Use HTTP basic authentication with the username and password from this Secret."
    )

    @model_validator(mode="after")
    def _check(self) -> HttpAuth:
        if self.bearer_token_secret_ref is not None and self.basic_auth_secret_ref is not None:
            raise field_error("basicAuthSecretRef", "set at most one of bearerTokenSecretRef and basicAuthSecretRef")
        return self


class HttpTLS(ApiModel):
    """TLS settings for an https:// URL."""

    ca_secret_ref: CASecretRef | None = Field(
        default=None, description="Trust this CA bundle instead of the system's roots."
    )
    cert_secret_ref: CertSecretRef | None = Field(
        default=None, description="Present this client certificate (mutual TLS)."
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server's certificate. For test setups only."
    )
