"""Which AWS credentials an environment uses: its named profile on a laptop, the ambient ones in a pod or CI."""

from __future__ import annotations

import os

from mlops_template.errors import ConfigError

# Variables through which a pod, a CI job or a shell hands credentials over directly.
_AMBIENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)


def usable_profile(profile: str | None, *, environment: str) -> str | None:
    """The profile to use, or None to let boto's default chain find credentials.

    A profile that this machine does not define is skipped where credentials
    come from the process environment (a pod's role, CI secrets), and is an
    error otherwise: better now than a failed upload in the middle of a step.
    """
    if profile is None:
        return None
    import botocore.session

    if profile in botocore.session.Session().available_profiles:
        return profile
    if any(os.environ.get(name) for name in _AMBIENT):
        return None
    raise ConfigError(
        f"environment '{environment}': AWS profile '{profile}' is not defined on this machine; "
        f"create it (aws configure --profile {profile}) or provide credentials through AWS_* variables"
    )
