"""ApiSettings: precedence flags > environment > .env file > defaults, key hiding, validation."""

import os

import pytest

from gcache.api.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ApiSettings,
    MissingApiKeyError,
)

SECRET = "sk-settings-SECRET-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No API variables from the developer's shell, and no stray .env in the working dir."""
    for name in ("API_KEY", "BASE_URL", "API_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "settings.env"
    path.write_text("API_KEY=file-key\nBASE_URL=http://file.example/v1\nAPI_MODEL=file-model\n")
    return path


def test_dotenv_file_only(env_file):
    s = ApiSettings.resolve(env_file=env_file)
    assert (s.api_key, s.base_url, s.model) == ("file-key", "http://file.example/v1", "file-model")
    # dotenv_values must not leak the file into the process environment
    assert "API_KEY" not in os.environ and "API_MODEL" not in os.environ


def test_environment_beats_dotenv(env_file, monkeypatch):
    monkeypatch.setenv("API_KEY", "env-key")
    monkeypatch.setenv("API_MODEL", "qwen-plus")
    s = ApiSettings.resolve(env_file=env_file)
    # BASE_URL is not in the environment, so it still comes from the file
    assert (s.api_key, s.base_url, s.model) == ("env-key", "http://file.example/v1", "qwen-plus")


def test_flags_beat_environment_and_dotenv(env_file, monkeypatch):
    monkeypatch.setenv("API_KEY", "env-key")
    monkeypatch.setenv("BASE_URL", "http://env.example/v1")
    monkeypatch.setenv("API_MODEL", "env-model")
    s = ApiSettings.resolve(
        api_key="flag-key", base_url="http://flag.example/v1/", model="qwen-turbo", env_file=env_file
    )
    assert (s.api_key, s.base_url, s.model) == ("flag-key", "http://flag.example/v1", "qwen-turbo")


def test_empty_values_count_as_unset(env_file, monkeypatch):
    monkeypatch.setenv("API_KEY", "")
    s = ApiSettings.resolve(api_key="", env_file=env_file)
    assert s.api_key == "file-key"


def test_defaults_when_only_the_key_is_given(monkeypatch):
    monkeypatch.setenv("API_KEY", "env-key")
    s = ApiSettings.resolve(env_file=None)
    assert s.base_url == DEFAULT_BASE_URL == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert s.model == DEFAULT_MODEL == "qwen-flash"
    assert set(KNOWN_MODELS) == {"qwen-flash", "qwen-plus", "qwen-turbo"}
    assert (s.timeout_s, s.max_retries, s.max_concurrency) == (60, 4, 8)


def test_default_env_file_is_read_from_working_directory(tmp_path):
    (tmp_path / ".env").write_text("API_KEY=cwd-key\n")
    assert ApiSettings.resolve().api_key == "cwd-key"


def test_overrides_and_unknown_override(monkeypatch):
    monkeypatch.setenv("API_KEY", "k")
    s = ApiSettings.resolve(env_file=None, timeout_s=2.5, max_retries=0, max_concurrency=3)
    assert (s.timeout_s, s.max_retries, s.max_concurrency) == (2.5, 0, 3)
    with pytest.raises(TypeError, match="unknown ApiSettings fields"):
        ApiSettings.resolve(env_file=None, timeout=3)


def test_missing_key_message_says_how_to_set_it(tmp_path):
    missing = tmp_path / "nope.env"
    with pytest.raises(MissingApiKeyError) as info:
        ApiSettings.resolve(env_file=missing)
    msg = str(info.value)
    for hint in ("export API_KEY=...", "API_KEY=... in .env", "--api-key", "does not exist", "EMPTY"):
        assert hint in msg
    assert isinstance(info.value, ValueError)


def test_missing_key_mentions_env_file_that_lacks_it(tmp_path):
    path = tmp_path / "partial.env"
    path.write_text("API_MODEL=qwen-plus\n")
    with pytest.raises(MissingApiKeyError, match="has no API_KEY"):
        ApiSettings.resolve(env_file=path)


def test_repr_str_and_to_dict_hide_the_key():
    s = ApiSettings(api_key=SECRET, base_url="http://127.0.0.1:1/v1", model="m")
    for text in (repr(s), str(s), f"{s}", str(s.to_dict())):
        assert SECRET not in text
        assert "***" in text
    assert s.to_dict()["base_url"] == "http://127.0.0.1:1/v1"
    assert s.api_key == SECRET  # still usable


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"api_key": " "}, "No API key found"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"model": ""}, "model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"backoff_base_s": -1.0}, "backoff_base_s"),
        ({"backoff_base_s": 2.0, "backoff_max_s": 1.0}, "backoff_max_s"),
    ],
)
def test_validation(kwargs, match):
    base = {"api_key": "k", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ValueError, match=match):
        ApiSettings(**{**base, **kwargs})
