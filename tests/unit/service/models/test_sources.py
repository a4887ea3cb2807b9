"""Which S3 folders an adapter may be imported from: under an allowed prefix, never the service's bucket."""

from __future__ import annotations

import pytest

from service.models.sources import S3Folder, SourceError, allowed_folder, parse_s3_folder

ALLOWED = ["s3://shared-adapters/team-a/", "s3://public-loras"]


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        ("s3://shared-adapters/team-a/bot/", S3Folder("shared-adapters", "team-a/bot/")),
        ("s3://shared-adapters/team-a/bot", S3Folder("shared-adapters", "team-a/bot/")),
        ("s3://public-loras/", S3Folder("public-loras", "")),
        ("s3://public-loras/x/y/z/", S3Folder("public-loras", "x/y/z/")),
    ],
)
def test_folders_under_an_allowed_prefix(uri: str, folder: S3Folder) -> None:
    assert allowed_folder(uri, ALLOWED, "tuneserve") == folder


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("https://example.com/a/", "not an s3:// URI"),
        ("s3://Bad_Bucket/a/", "not a valid bucket name"),
        ("s3://shared-adapters/team-a/../team-b/", "'..' path segment"),
        ("s3://shared-adapters/team-a//x/", "empty"),
        ("s3://shared-adapters/team-a/./x/", "'.'"),
        ("s3://shared-adapters/team-ab/x/", "not under a prefix the admin allows"),  # a segment, not a string
        ("s3://shared-adapters/", "not under a prefix"),
        ("s3://other/team-a/", "not under a prefix"),
        ("s3://tuneserve/adapters/SmolLM2-135M-Instruct/x/", "own bucket"),
    ],
)
def test_everything_else_is_refused_saying_why(uri: str, words: str) -> None:
    with pytest.raises(SourceError, match=words.replace(".", r"\.").replace("(", r"\(")):
        allowed_folder(uri, ALLOWED, "tuneserve")


def test_the_own_bucket_is_refused_even_when_allowed() -> None:
    with pytest.raises(SourceError, match="own bucket"):
        allowed_folder("s3://tuneserve/shared/x/", ["s3://tuneserve/shared/"], "tuneserve")


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(SourceError, match="TUNESERVE_ADAPTER_IMPORT_SOURCES is empty"):
        allowed_folder("s3://public-loras/x/", [], "tuneserve")
    assert str(parse_s3_folder("s3://public-loras/x")) == "s3://public-loras/x/"


def test_the_setting_is_a_comma_separated_list_of_s3_uris() -> None:
    from service.platform.settings import Settings, SettingsError, load_settings

    assert Settings(adapter_import_sources="s3://a-b/x/, s3://c-d").adapter_import_sources == [
        "s3://a-b/x/",
        "s3://c-d",
    ]
    with pytest.raises(SettingsError, match="s3://bucket/prefix/ URI, not https://x/"):
        load_settings(adapter_import_sources="https://x/")
