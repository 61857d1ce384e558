"""README.md holds to what it shows: every command line in its shell blocks is accounted for (make targets exist;
each `cotgap VERB` / `python -m cotgap_ray VERB` answers --help and knows the flags shown; `ray` subcommands and
flags exist in Ray's own CLI, and the files they name exist), its YAML snippets and `key=value` overrides are valid
config, its file tree matches the repository, and it stays short. Fast: no Ray is started and no model loads.

    ```bash
    cotgap search --config experiments/my_study.yaml --help-config
    ```  -> verb "search"; `python -m cotgap_ray search --help` exits 0 and lists --config and --help-config
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 200
MAX_WIDTH = 120
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# Every file under these directories must appear in the README's file tree, itself or under a directory line.
TREE_ROOTS = ("cotgap_ray", "benchmarks", "experiments", "scripts", "docs")


# ------------------------------------------------------------------------------------------------ parsing (pure)


def fenced_blocks(text: str) -> list[tuple[str, list[str], str]]:
    """(language, lines, the heading above it) of every fenced block, indented ones included.

    fenced_blocks("## Run\\n```bash\\nmake run\\n```\\n") -> [("bash", ["make run"], "Run")]
    """
    blocks, lang, body, heading = [], None, [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if lang is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif stripped.startswith("```"):
                lang, body, indent = stripped[3:].strip(), [], len(line) - len(line.lstrip())
        elif stripped.startswith("```"):
            blocks.append((lang, body, heading))
            lang = None
        else:
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
    assert lang is None, "README.md: a fenced block is not closed"
    return blocks


def command_lines(lines: list[str]) -> list[list[str]]:
    """Shell lines as argument lists: continuations joined, comments and blank lines dropped.

    command_lines(["ray job submit -- \\\\", "    cotgap search  # run"]) -> [["ray", "job", "submit", "--", "cotgap",
    "search"]]
    """
    commands, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = shlex.split(pending + line, comments=True)
        pending = ""
        if words:
            commands.append(words)
    return commands


def without_env(words: list[str]) -> list[str]:
    """Drop leading VAR=value assignments: without_env(["RAY_AUTH_MODE=token", "ray", "up"]) -> ["ray", "up"]."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return words


def flags(words: list[str]) -> list[str]:
    """Options shown, brackets and values stripped: ["[--out", "DIR]", "--json=x"] -> ["--out", "--json"]."""
    out = []
    for word in words:
        word = word.strip("[]")
        if word.startswith("-") and word not in ("-", "--"):
            out.append(word.split("=", 1)[0])
    return out


def cotgap_verb(words: list[str]) -> str | None:
    """The verb of `cotgap VERB ...`, `python -m cotgap_ray VERB ...` or `python -m cotgap_ray.VERB ...`, else None."""
    if words[0] == "cotgap":
        return words[1] if len(words) > 1 else ""
    if Path(words[0]).name.startswith("python") and len(words) > 2 and words[1] == "-m":
        module = words[2]
        if module == "cotgap_ray":
            return words[3] if len(words) > 3 else ""
        if module.startswith("cotgap_ray."):
            return module.removeprefix("cotgap_ray.")
    return None


def tree_entries(text: str) -> list[str]:
    """The paths of the file tree (the ```text block under "## File tree"): first word of each unindented line."""
    trees = [body for lang, body, heading in fenced_blocks(text) if heading == "File tree"]
    assert len(trees) == 1, "README.md needs exactly one fenced block under '## File tree'"
    return [line.split()[0] for line in trees[0] if line.strip() and not line[0].isspace()]


def covered(path: str, entries: list[str]) -> bool:
    """A file is covered by its own line or by a directory line above it ("cotgap_ray/search/")."""
    return any(path == e or (e.endswith("/") and path.startswith(e)) for e in entries)


def makefile_targets(makefile: str) -> set[str]:
    """Rule names of a Makefile (not variables, not .PHONY): "run:  ## x\nPY := y" -> {"run"}."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, re.M)} - {".PHONY"}


def test_parsing_on_literal_text():
    text = ("# t\n## Run\n```bash\nRAY_AUTH_MODE=token ray job submit --address http://x -- \\\n"
            "    cotgap search --out runs/a  # a comment\n```\n"
            "## File tree\n```text\nMakefile      targets\n  continued description\ndocs/  notes\n```\n")
    (lang, body, heading), _tree = fenced_blocks(text)
    assert (lang, heading) == ("bash", "Run")
    [words] = command_lines(body)
    assert without_env(words) == ["ray", "job", "submit", "--address", "http://x", "--", "cotgap", "search", "--out",
                                  "runs/a"]
    assert flags(["[--config", "FILE]", "--json=x", "--", "key=value"]) == ["--config", "--json"]
    assert cotgap_verb(["python", "-m", "cotgap_ray.search"]) == "search" and cotgap_verb(["make", "run"]) is None
    assert cotgap_verb(["python", "-m", "cotgap_ray", "list"]) == "list"
    assert tree_entries(text) == ["Makefile", "docs/"]
    assert covered("docs/faults.md", ["docs/"]) and not covered("docs/faults.md", ["docs/testing.md"])
    assert makefile_targets(".PHONY: run\nrun:  ## x\n\tsetup\nPY := x\ntest-all:\n") == {"run", "test-all"}


# ------------------------------------------------------------------------------------------------ the README


@functools.cache
def readme() -> str:
    return README.read_text()


def shell_commands() -> list[list[str]]:
    """Every command line of the README's shell blocks; `ray job submit ... -- CMD` also yields CMD."""
    out = []
    for lang, body, _ in fenced_blocks(readme()):
        if lang in SHELL_LANGS:
            for words in command_lines(body):
                words = without_env(words)
                out.append(words)
                if words[0] == "ray" and "--" in words:
                    out.append(words[words.index("--") + 1:])
    return out


def shown_verbs() -> dict[str, list[str]]:
    """verb -> every flag the README shows for it, over all its lines."""
    verbs: dict[str, list[str]] = {}
    for words in shell_commands():
        verb = cotgap_verb(words)
        if verb is not None:
            shown = verbs.setdefault(verb, [])
            shown += [f for f in flags(words[2:] if words[0] == "cotgap" else words[3:]) if f not in shown]
    return verbs


def test_readme_is_short_and_narrow():
    lines = readme().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; keep it to {MAX_LINES} (move notes to docs/)"
    wide = [f"line {i}: {len(line)} characters" for i, line in enumerate(lines, 1) if len(line) > MAX_WIDTH]
    assert not wide, f"README.md lines over {MAX_WIDTH} characters: {wide}"


def test_every_shell_line_is_accounted_for():
    """Each line runs one of the programs this test knows how to check; anything else is unaccounted for."""
    commands = shell_commands()
    assert commands, "README.md shows no shell commands"
    targets = makefile_targets((ROOT / "Makefile").read_text())
    for words in commands:
        shown = " ".join(words)
        if words[0] == "make":
            missing = [t for t in words[1:] if not t.startswith("-") and t not in targets]
            assert not missing, f"README.md shows `{shown}`: no Makefile target {missing} (targets: {sorted(targets)})"
        elif words[0] == "cp":
            assert (ROOT / words[1]).exists(), f"README.md shows `{shown}`: {words[1]} does not exist"
        elif words[0] == "ray" or cotgap_verb(words) is not None:
            pass  # checked below, per verb and per ray subcommand
        else:
            pytest.fail(f"README.md shows `{shown}`: no check here accounts for `{words[0]}` (add one to this test)")
    for target in ("run", "test", "test-all"):
        assert target in targets, f"Makefile has no `{target}` target; the README's quickstart and tests use it"


@functools.cache
def module_help(verb: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "cotgap_ray", verb, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def cli_help(verb: str, capsys) -> tuple[int, str]:
    """(exit status, output) of cotgap_ray.cli.main([verb, "--help"]), the `cotgap` console entry."""
    from cotgap_ray import cli

    try:
        status = cli.main([verb, "--help"])
    except SystemExit as e:
        status = e.code
    return status or 0, capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(shown_verbs()))
def test_verb_answers_help_and_knows_the_flags_shown(verb, capsys):
    assert re.fullmatch(r"[a-z_]+", verb), f"README.md shows `cotgap {verb}`: not a verb"
    done = module_help(verb)
    assert done.returncode == 0, (f"README.md shows `cotgap {verb}`, but `python -m cotgap_ray {verb} --help` "
                                  f"exited {done.returncode}: {done.stderr.strip()[-500:]}")
    status, out = cli_help(verb, capsys)
    assert status == 0, f"cotgap {verb} --help exited {status}"
    helps = {f"python -m cotgap_ray {verb} --help": done.stdout, f"cotgap {verb} --help": out}
    for where, text in helps.items():
        missing = [f for f in shown_verbs()[verb] if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
        assert not missing, f"README.md shows {missing} for `cotgap {verb}`; `{where}` does not list them"
        if re.search(r"(?<![\w-])--config(?![\w-])", text):
            assert "--help-config" in text, f"`{where}` takes --config but not --help-config (README: any verb)"


@functools.cache
def ray_cli():
    from ray.scripts.scripts import cli  # click group; importing it starts nothing

    return cli


def test_ray_lines_use_real_subcommands_flags_and_files():
    ray_lines = [w for w in shell_commands() if w[0] == "ray"]
    assert ray_lines, "README.md shows no `ray` command for the cluster"
    assert any(w[1:2] == ["up"] for w in ray_lines), "README.md's cluster section needs `ray up cluster.yaml`"
    for words in ray_lines:
        shown = " ".join(words)
        own = words[:words.index("--")] if "--" in words else words
        command, rest = ray_cli(), own[1:]
        while rest and hasattr(command, "commands") and rest[0] in command.commands:
            command, rest = command.commands[rest[0]], rest[1:]
        assert not hasattr(command, "commands"), f"README.md shows `{shown}`: not a complete ray subcommand"
        accepted = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        unknown = [f for f in flags(rest) if f not in accepted]
        assert not unknown, f"README.md shows `{shown}`: `ray {command.name}` does not accept {unknown}"
        for word in words:
            if re.search(r"\.(ya?ml|py|json)$", word) and "://" not in word:
                assert (ROOT / word).exists(), f"README.md shows `{shown}`: {word} does not exist"


def test_yaml_snippets_are_valid_configs(tmp_path):
    """A config excerpt in the README loads (every key exists, values have the right types)."""
    from cotgap_ray.config import load_config

    snippets = [body for lang, body, _ in fenced_blocks(readme()) if lang in ("yaml", "yml")]
    for i, body in enumerate(snippets):
        path = tmp_path / f"snippet{i}.yaml"
        path.write_text("\n".join(body) + "\n")
        load_config(str(path), [])


def test_overrides_shown_are_config_keys():
    """`key=value` words on a cotgap line name real config keys with valid values (on the embedded default)."""
    from cotgap_ray.config import load_config

    for words in shell_commands():
        if cotgap_verb(words) is not None:
            overrides = [w for w in words if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+=.*", w)]
            if overrides:
                load_config(None, overrides)


def test_file_tree_exists_and_is_complete():
    entries = tree_entries(readme())
    missing = [e for e in entries if not (ROOT / e).exists()]
    assert not missing, f"README.md's file tree names paths that do not exist: {missing}"
    for entry in entries:
        assert entry.endswith("/") == (ROOT / entry).is_dir(), f"file tree: write directories as `{entry}/`"
    unlisted = []
    for top in TREE_ROOTS:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            for name in filenames:
                path = (Path(dirpath) / name).relative_to(ROOT).as_posix()
                if not name.startswith(".") and not name.endswith(".pyc") and not covered(path, entries):
                    unlisted.append(path)
    assert not unlisted, f"files missing from README.md's file tree (add a line, or a directory line): {unlisted}"
