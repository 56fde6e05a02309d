"""An S3 bucket (or any S3-compatible store) through s3fs, the same code path for AWS and for a local endpoint."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from mlops_template.errors import StorageError
from mlops_template.redact import redact
from mlops_template.storage.base import Storage

if TYPE_CHECKING:
    import s3fs

# How long the endpoint has to accept the probe's connection, then to answer it.
PROBE_SECONDS = 3

_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_OTHER_REGION = {"AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect"}


class S3Storage(Storage):
    def __init__(
        self,
        uri: str,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.root = uri.removeprefix("s3://").rstrip("/")
        self.profile, self.region, self.endpoint_url = profile, region, endpoint_url

    @functools.cached_property
    def fs(self) -> s3fs.S3FileSystem:
        """Made on first use (s3fs takes a second to import: a failed :meth:`check` need not wait for it).

        Credentials come from the profile or the usual AWS_* variables, never
        from config. A file system of its own (no fsspec instance cache), so no
        other environment's settings are reused.
        """
        import s3fs

        return s3fs.S3FileSystem(**self.fsspec_options(), skip_instance_cache=True)

    def uri(self, key: str) -> str:
        return "s3://" + self.path(key)

    def fsspec_options(self) -> dict:
        """The same profile, region and endpoint for s3fs in other libraries (credentials stay the process's)."""
        client_kwargs = {k: v for k, v in {"region_name": self.region, "endpoint_url": self.endpoint_url}.items() if v}
        return {k: v for k, v in {"profile": self.profile, "client_kwargs": client_kwargs}.items() if v}

    def __getstate__(self) -> dict:
        """Sent to Dask workers without the file system made here; each worker makes its own."""
        return {k: v for k, v in self.__dict__.items() if k != "fs"}

    def check(self) -> None:
        """One LIST of at most one key under the root, without retries and with short timeouts."""
        import boto3
        from botocore.config import Config

        bucket, _, prefix = self.root.partition("/")
        config = Config(
            connect_timeout=PROBE_SECONDS,
            read_timeout=PROBE_SECONDS,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        try:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
            answer = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        except Exception as exc:  # botocore's failures come in many types; each gets its own diagnosis
            raise StorageError(f"storage s3://{self.root}: {self._problem(exc, bucket)}") from exc
        if "Name" not in answer:
            raise StorageError(f"storage s3://{self.root}: {self._not_s3('an answer without a bucket listing')}")

    def _problem(self, exc: Exception, bucket: str) -> str:
        """What went wrong and what to change, from the probe's error."""
        from botocore import exceptions as bx
        from botocore.parsers import ResponseParserError

        where = f"the S3 endpoint {redact(self.endpoint_url)}" if self.endpoint_url else "AWS S3"
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return f"no AWS credentials found ({exc}); {self._credentials_fix()}"
        if isinstance(exc, bx.ProfileNotFound):
            return f"{exc}; create it (aws configure --profile {self.profile}) or fix aws_profile in mlops.toml"
        if isinstance(exc, bx.ReadTimeoutError):
            return f"{where} did not answer within {PROBE_SECONDS} s; check that it is an S3 store and {self._endpoint_fix()}"
        if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
            return f"cannot reach {where} ({_innermost(exc)}); {self._endpoint_fix()}"
        if isinstance(exc, ResponseParserError):
            return self._not_s3("an answer that is not S3's XML")
        if isinstance(exc, ValueError) and self.endpoint_url:  # botocore's "Invalid endpoint: …"
            return (
                f"s3_endpoint_url {redact(self.endpoint_url)} is not a URL ({exc}); give one like http://127.0.0.1:9000"
            )
        if not isinstance(exc, bx.ClientError):
            return f"the probe failed ({type(exc).__name__}: {exc}); check storage in mlops.toml"
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return (
                f"bucket '{bucket}' does not exist at {where}; create it (aws s3 mb s3://{bucket}) "
                "or fix storage in mlops.toml / MLOPS_STORAGE"
            )
        if code in _DENIED or status == 403:
            return f"access denied by {where} ({code or status}); {self._credentials_fix()}"
        if code in _OTHER_REGION:
            return (
                f"bucket '{bucket}' is in another region ({code}); set aws_region in mlops.toml to the bucket's region"
            )
        if not code or code.isdigit():  # an HTTP status without an S3 error code: some other server answered
            return self._not_s3(f"HTTP {status}")
        return f"{where} refused the listing ({code}: {error.get('Message', '')}); check the bucket and its policy"

    def _not_s3(self, what: str) -> str:
        where = redact(self.endpoint_url) if self.endpoint_url else "the S3 endpoint"
        return f"{where} does not answer as S3 ({what}); fix s3_endpoint_url in mlops.toml / AWS_ENDPOINT_URL_S3"

    def _endpoint_fix(self) -> str:
        if self.endpoint_url:
            return "start it or fix s3_endpoint_url in mlops.toml / AWS_ENDPOINT_URL_S3"
        return "check the network and aws_region in mlops.toml"

    def _credentials_fix(self) -> str:
        if self.profile:
            return f"fix the keys of AWS profile '{self.profile}' (aws configure --profile {self.profile})"
        return "fix the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in use, or set aws_profile in mlops.toml"

    def write_bytes(self, key: str, data: bytes) -> None:
        """One PUT: S3 makes an object visible only once it is completely written."""
        self._call(self.fs.pipe_file, key, data)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """One conditional PUT (`If-None-Match: *`): S3 refuses it when the key exists."""
        try:
            self._call(lambda path: self.fs.pipe_file(path, data, mode="create"), key)
        except FileExistsError:
            return False
        return True

    def same_copy(self, key: str, source: str) -> bool | None:
        """Same size and ETag: a server-side copy keeps the ETag of a single-part object."""
        try:
            mine, theirs = self.fs.info(self.path(key)), self.fs.info(self.path(source))
        except (FileNotFoundError, OSError):
            return False
        return (
            mine.get("size") == theirs.get("size") and bool(mine.get("ETag")) and mine.get("ETag") == theirs.get("ETag")
        )

    def put_file(self, local_path, key: str) -> None:
        """One PUT, or a multipart upload for large files: either way visible only once complete."""
        self._call(lambda path: self.fs.put_file(str(local_path), path), key)


def _innermost(exc: BaseException) -> BaseException:
    """The error at the bottom of a chain (a refused connection rather than botocore's report of it)."""
    seen = [exc]
    while (inner := seen[-1].__cause__ or seen[-1].__context__) is not None and inner not in seen:
        seen.append(inner)
    return seen[-1]
