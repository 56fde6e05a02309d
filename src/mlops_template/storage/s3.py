"""An S3 bucket (or any S3-compatible store) through s3fs, the same code path for AWS and for a local endpoint."""

from __future__ import annotations

from .base import Storage


class S3Storage(Storage):
    def __init__(
        self,
        uri: str,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        import s3fs

        self.root = uri.removeprefix("s3://").rstrip("/")
        client_kwargs = {k: v for k, v in {"region_name": region, "endpoint_url": endpoint_url}.items() if v}
        # Credentials come from the profile or the usual AWS_* variables, never from config.
        self.fs = s3fs.S3FileSystem(profile=profile, client_kwargs=client_kwargs, skip_instance_cache=True)

    def uri(self, key: str) -> str:
        return "s3://" + self.path(key)

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

    def same_copy(self, key: str, source: str) -> bool:
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
