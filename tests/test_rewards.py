"""GRPO reward functions: the built-ins, and user rewards only from allowlisted modules."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest

from ftrecipes.errors import RecipeError
from ftrecipes.train import rewards


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_exact_match_compares_with_the_reference_column():
    reward = rewards.build({"name": "exact_match"})
    completions = [chat(' {"a":1} '), chat('{"a":2}'), '{"a":1}']
    assert reward(prompts=[[]] * 3, completions=completions, reference=['{"a":1}'] * 3) == [1.0, 0.0, 1.0]
    assert reward.needs_reference


def test_regex_must_match_the_whole_completion_across_lines():
    reward = rewards.build({"name": "regex", "pattern": r"vendor=\w+.*status=\w+"})
    got = reward(prompts=[[]] * 3, completions=[chat("vendor=Acme\nstatus=paid"), chat("x vendor=Acme status=paid"),
                                                chat("vendor=Acme")])
    assert got == [1.0, 0.0, 0.0]


def test_json_schema_scores_valid_json_only():
    any_json = rewards.build({"name": "json_schema"})
    assert any_json(prompts=[[]] * 3, completions=[chat("[1, 2]"), chat("{bad"), chat("")]) == [1.0, 0.0, 0.0]
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
    invoice = rewards.build({"name": "json_schema", "json_schema": schema})
    got = invoice(prompts=[[]] * 3, completions=[chat('{"total": 5}'), chat('{"total": "5"}'), chat("[]")])
    assert got == [1.0, 0.0, 0.0]


def test_length_penalty_counts_completion_tokens():
    reward = rewards.build({"name": "length_penalty", "max_tokens": 4})
    ids = [[1] * 3, [1] * 4, [1] * 6, [1] * 8, [1] * 20]
    got = reward(prompts=[[]] * 5, completions=[chat("")] * 5, completion_ids=ids)
    assert got == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_rewards_carry_their_names_and_pickle():
    for entry in ({"name": "exact_match"}, {"name": "regex", "pattern": "a+"}, {"name": "json_schema"},
                  {"name": "length_penalty", "max_tokens": 3}):
        reward = rewards.build(entry)
        assert reward.__name__ == entry["name"]  # TRL logs rewards/<name>/mean
        assert pickle.loads(pickle.dumps(reward)).__name__ == entry["name"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `ft_user_rewards` on sys.path that leaves a marker file when it is imported."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "ft_user_rewards.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")

        def short(prompts, completions, limit=5, **kwargs):
            return [1.0 if len(c[-1]["content"]) <= limit else 0.0 for c in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("ft_user_rewards", None)


def test_a_user_reward_runs_only_from_an_allowlisted_module(user_module):
    entry = {"name": "ft_user_rewards.short", "args": {"limit": 3}}
    with pytest.raises(RecipeError, match="not allowlisted") as refused:
        rewards.build(entry, reward_modules=[])
    assert "reward_modules=[ft_user_rewards]" in refused.value.hint
    assert not user_module.exists() and "ft_user_rewards" not in sys.modules  # never imported

    reward = rewards.build(entry, reward_modules=["ft_user_rewards"])
    assert user_module.exists()
    assert reward(prompts=[[]] * 2, completions=[chat("abc"), chat("abcd")]) == [1.0, 0.0]
    assert reward.__name__ == "ft_user_rewards.short"


def test_the_allowlist_covers_a_package_and_its_submodules_only():
    assert rewards.allowlisted("mypkg.rewards", ["mypkg"])
    assert rewards.allowlisted("mypkg", ["mypkg"])
    assert not rewards.allowlisted("mypkgx.rewards", ["mypkg"])
    assert not rewards.allowlisted("mypkg", ["mypkg.rewards"])
    assert rewards.split_path("mypkg.rewards:score") == ("mypkg.rewards", "score")
    assert rewards.split_path("mypkg.rewards.score") == ("mypkg.rewards", "score")
    assert rewards.split_path("exact_match") is None
    assert rewards.split_path("os.system; rm") is None


def test_unknown_names_get_a_suggestion():
    message, hint = rewards.check_name("exact_mach", [])
    assert "neither a built-in reward nor an installed entry point" in message
    assert hint == "did you mean exact_match?"


def test_an_installed_entry_point_is_usable_by_name_and_allowlists_its_module(tmp_path, monkeypatch, user_module):
    dist = tmp_path / "ft_user_rewards_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ft-user-rewards-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ftrecipes.rewards]\nshort_answer = ft_user_rewards:short\n")
    assert rewards.check_name("short_answer", []) is None
    assert rewards.check_name("ft_user_rewards.short", []) is None  # the entry point's module is allowlisted
    reward = rewards.build({"name": "short_answer"})
    assert reward(prompts=[[]], completions=[chat("ok")]) == [1.0]
