"""Where each config value came from: a line of the YAML file, a command-line override, or a CLI flag.

An error about a config value names this source, so that the user fixes the right thing: a typo in `serch.trials=2`
is in the command line, not in the YAML file the command line amends.

    sources = Sources.of_yaml("exp.yaml", "task:\\n  n_dev: 10\\nteachers: [a, b]\\n")
    sources.set("task.n_dev", "command-line override `task.n_dev=20`")
    sources("task.n_dev")     -> "command-line override `task.n_dev=20`"
    sources("teachers.1")     -> "exp.yaml:3"          (list items are keyed by their index)
    sources("search.trials")  -> "exp.yaml"            (not set anywhere: the file's default applies)

A key's source is its own record, else the nearest override above it (`task={...}` sets task.n_dev too; a YAML
section line does not: the keys it leaves out keep their defaults), else a record below it (the override
`serch.trials=2` is what created `serch`).
"""

from __future__ import annotations

Key = tuple  # ("task", "n_dev") or ("teachers", 1)


def _key(key: str | Key) -> Key:
    if isinstance(key, tuple):
        return key
    return tuple(int(part) if part.isdigit() else part for part in key.split(".")) if key else ()


class Sources:
    """Dotted config key -> where its value was set (see the module docstring)."""

    def __init__(self, file: str):
        self.file = file
        self._where: dict[Key, str] = {}
        self._whole: set[Key] = set()  # keys set as a whole value (overrides): they set every key below them too

    @classmethod
    def of_yaml(cls, file: str, node) -> Sources:
        """The line of every key and list item of a composed YAML document (yaml.compose's node; None: empty)."""
        sources = cls(file)

        def walk(node, key: Key, above: frozenset = frozenset()) -> None:
            if node is None or id(node) in above:  # an alias of a node that contains it: recorded once
                return
            above = above | {id(node)}
            if node.id == "mapping":
                for k, v in node.value:
                    child = (*key, k.value)
                    sources._where[child] = f"{file}:{k.start_mark.line + 1}"
                    walk(v, child, above)
            elif node.id == "sequence":
                for i, item in enumerate(node.value):
                    sources._where[(*key, i)] = f"{file}:{item.start_mark.line + 1}"
                    walk(item, (*key, i), above)

        walk(node, ())
        return sources

    def set(self, key: str | Key, where: str) -> None:
        """`where` now sets `key` and everything below it (an override replaces the file's value)."""
        key = _key(key)
        self._where = {k: v for k, v in self._where.items() if k[:len(key)] != key}
        self._whole = {k for k in self._whole if k[:len(key)] != key} | {key}
        self._where[key] = where

    def keep_only(self, key: str | Key, children: tuple[str, ...]) -> None:
        """Forget the records below `key` except those under its `children` (a section reset to its defaults)."""
        key = _key(key)

        def kept(k: Key) -> bool:
            return k[:len(key)] != key or (len(k) > len(key) and k[len(key)] in children)

        self._where = {k: v for k, v in self._where.items() if kept(k)}
        self._whole = {k for k in self._whole if kept(k)}

    def given(self, key: str | Key) -> str | None:
        """Where `key` (or a section above it, or a key below it) was set; None when nothing set it."""
        key = _key(key)
        if not key:  # the document as a whole
            return None
        if key in self._where:
            return self._where[key]
        for n in range(len(key) - 1, 0, -1):
            if key[:n] in self._whole:
                return self._where[key[:n]]
        return next((v for k, v in self._where.items() if k[:len(key)] == key), None)

    def __call__(self, key: str | Key) -> str:
        """Where `key` was set, else the file (whose defaults apply to what it does not set)."""
        return self.given(key) or self.file
