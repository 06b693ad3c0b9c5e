"""File ids and storage keys; settings from the documented environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from file_svc.domain.files import blob_key, is_file_id, new_file_id, thumbnail_key
from file_svc.settings import FileSettings, S3Location


def test_ids_sort_by_time_and_keys_hold_no_user_input() -> None:
    ids = [new_file_id() for _ in range(100)]
    assert all(is_file_id(i) for i in ids) and len(set(ids)) == 100
    assert ids[0][:14] <= ids[-1][:14]  # the millisecond timestamp leads
    key = blob_key(ids[0])
    assert key.startswith("blobs/") and key.endswith(ids[0]) and key.count("/") == 3
    assert thumbnail_key(ids[0], 64).endswith(f"{ids[0]}/64.webp")
    for bad in ("../etc", "f_XYZ", "f_" + "0" * 31, "", ids[0] + "\n", ids[0] + "\n/../x"):
        assert not is_file_id(bad)
        with pytest.raises(ValueError):
            blob_key(bad)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FILE_PORT": "9085",
        "FILE_STORAGE": "s3://media/uploads/",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
        "FILE_MAX_BYTES": "1048576",
        "FILE_URL_SECRET": "new-secret-new-secret-new-secret-1,old-secret-old-secret-old-secret-12",
        "SWITCHYARD_ENV": "production",
    }.items():
        monkeypatch.setenv(name, value)
    settings = FileSettings()
    assert settings.port == 9085 and settings.max_bytes == 1048576
    assert settings.s3 == S3Location(bucket="media", prefix="uploads/")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert [k.decode()[:3] for k in settings.signing_keys] == ["new", "old"]
    assert "very-secret" not in repr(settings)


def test_local_storage_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FileSettings(storage="/srv/files").s3 is None
    assert FileSettings(storage="s3://bucket").s3 == S3Location("bucket", "")
    for bad in ({"storage": "ftp://x"}, {"storage": "s3://"}, {"url_secrets": ""}):
        with pytest.raises(ValidationError):
            FileSettings(**bad)
    with pytest.raises(ValidationError, match="FILE_URL_SECRET"):
        FileSettings(environment="production")  # the development key is refused
    with pytest.raises(ValidationError):
        FileSettings(upload_heartbeat=60, orphan_grace=100)
