"""Inputs for the loader fuzzer: manifest trees made by mutating the example manifests and the
hostile corpus, documents built from the manifest JSON Schema, and shapes that stress a parser."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
DUMPER: Final[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class Tree:
    """A manifest tree to write: relative file names and their bytes, and what to pass
    as the root (``""``: the directory itself, else one of the files)."""

    files: dict[str, bytes]
    root: str = ""

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(len(data) for data in self.files.values())


TOKENS: Final = tuple(
    token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    for token in (
        "&a ", "*a", "&b [*a, *a, *a]", "!", "!!str ", "!!int ", "!!binary ", "!!set ", "!custom ",
        "!!python/object/apply:os.system ", "!<tag:x,2000:y> ", "{", "}", "[", "]", ",", ": ", ":",
        "- ", "? ", "\t", "#", "'", '"', "|", ">-", "|+2", "\n", "\r\n", "\r", "---\n", "...\n",
        "--- ", "%YAML 1.2\n---\n", "%TAG !e! tag:e.com,2000:\n---\n", "<<: *a\n", "\ufeff",
        "\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ufffe", b"\xff", b"\xc3",
        b"\xed\xa0\x80", "\ud800", '"\\ud800"', '"\\udc00\\ud800"', '"\\U0010ffff"', '"\\x00"',
        '"a\\tb"', '"\\N\\_\\L\\P"', '"\\e"', "${env:X}", "${env:", "$${", "${HOME}", "null", "~",
        "true", "yes", "off", ".nan", ".inf", "-.inf", "1e999", "0o17", "0x1F", "-0", "1_000",
        "9" * 40, "9" * 5000, "2024-01-01", "1.5", "\U0001f600", "\u200b", "\u0301", " ", "  ",
        "apiVersion: reconciler/v1\n", "kind: RecordSet\n", "records:\n", "  - key: k\n",
        "metadata: {datasetSlug: abc}\n", "storageTarget: st\n", "key: a/b\n", "namespace: n\n",
    )
)
FIELDS: Final = (
    "apiVersion", "kind", "name", "slug", "type", "config", "namespace", "key", "owner", "tags",
    "schemaHash", "metadata", "deleted", "protect", "purge", "records", "defaults", "retention",
    "status", "storageTarget", "description", "iam", "readScopes", "writeScopes", "datasetSlug",
    "mode", "rules", "maxAgeHours", "maxTotalBytes", "deleteGraceMinutes", "coldStorageAfterHours",
)
TEXT_POOLS: Final = (
    "abcxyz", "ABC-_.:09", " ", "/\\'\"#:-{}[],&*!|>%@`?", "\u00e9\u00df\u4e2d\u6587\U0001f600",
    "\u200b\u0301\u00a0\u3000",
)
HOSTILE_POOLS: Final = ("\t\n\r", "$", "\x00\x07\x1b\x7f\x85\u2028\ufeff", "\ud800\udfff")
STYLES: Final = ({}, {"default_flow_style": True}, {"default_flow_style": None}, {"indent": 4},
                 {"width": 20}, {"allow_unicode": True}, {"default_style": '"'}, {"explicit_start": True})


class Inputs:
    """Random manifest trees from one seeded generator: the corpus mutated, documents
    built from the schema, and shapes that stress the parser."""

    def __init__(self, rng: random.Random, corpus: list[bytes], schema: dict[str, Any]) -> None:
        self.rng = rng
        self.corpus = corpus
        self.defs: dict[str, Any] = schema["$defs"]
        self.kinds = [ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]]
        self.wrong = 0.0

    def tree(self) -> Tree:
        """One to four files; now and then a hidden one, a ``.yml``, a subdirectory, or
        two that share documents (so that addresses collide across files)."""
        names = ["a.yaml", "b.yml", "sub/c.yaml", "d e/\u00fc.yaml", ".hidden.yaml", "notes.txt"]
        count = self.rng.choice((1, 1, 1, 2, 2, 3, 4))
        chosen = ["a.yaml", *self.rng.sample(names[1:], count - 1)]
        files = {name: self.file() for name in chosen}
        if count > 1 and self.rng.random() < 0.2:
            first, other = files["a.yaml"], files[chosen[1]]
            files[chosen[1]] = first if self.rng.random() < 0.5 else other + b"\n---\n" + first
        if count == 1 and self.rng.random() < 0.2:
            return Tree(files, "a.yaml")
        return Tree(files)

    def file(self) -> bytes:
        """A corpus file mutated, generated documents, or a stress shape."""
        choice = self.rng.random()
        if choice < 0.5:
            data = self.rng.choice(self.corpus)
            mutations = self.rng.choice((1, 1, 2, 3, 5, 8))
        elif choice < 0.85:
            data = self.documents()
            mutations = self.rng.choice((0, 0, 0, 1, 2))
        else:
            data = self.stress()
            mutations = self.rng.choice((0, 1))
        for _ in range(mutations):
            data = self.mutate(data)
        return data

    # --- mutations ---

    def mutate(self, data: bytes) -> bytes:
        """One random change to ``data``."""
        rng = self.rng
        at = rng.randrange(len(data) + 1)
        end = min(len(data), at + rng.choice((1, 2, 8, 64, 512)))
        kind = rng.randrange(11)
        if kind == 0 and data:
            index = min(at, len(data) - 1)
            return data[:index] + bytes([data[index] ^ (1 << rng.randrange(8))]) + data[index + 1 :]
        if kind in (1, 2):
            return data[:at] + rng.choice(TOKENS) + data[at:]
        if kind == 3:
            return data[:at] + data[end:]
        if kind == 4:
            return data[:end] + data[at:end] * rng.choice((1, 1, 2, 2, 10, 100)) + data[end:]
        if kind == 5:
            other = rng.choice(self.corpus)
            start = rng.randrange(len(other) + 1)
            piece = other[start : start + rng.choice((8, 64, 512, 4096))]
            return data[:at] + piece + data[rng.choice((at, end)) :]
        if kind == 6:
            other = rng.choice(self.corpus)
            return data[:at] + other[rng.randrange(len(other) + 1) :]
        if kind == 7:
            return self._lines(data)
        if kind == 8:
            return self._value(data)
        if kind == 9:
            return data[:at] + self.stress() + data[at:]
        return data[:at] + rng.choice(FIELDS).encode() + rng.choice((b": ", b":", b"")) + data[at:]

    def _lines(self, data: bytes) -> bytes:
        lines = data.split(b"\n")
        index = self.rng.randrange(len(lines))
        other = self.rng.randrange(len(lines))
        kind = self.rng.randrange(5)
        if kind == 0:
            lines.insert(other, lines[index])
        elif kind == 1:
            del lines[index]
        elif kind == 2:
            lines[index], lines[other] = lines[other], lines[index]
        elif kind == 3:
            lines[index] = self.rng.choice((b" ", b"  ", b"\t", b"    ")) + lines[index]
        else:
            lines[index] = lines[index].lstrip(b" ")
        return b"\n".join(lines)

    def _value(self, data: bytes) -> bytes:
        """Replace one scalar after a ``: `` with an interesting one."""
        found = [match.end() for match in re.finditer(rb": ", data)]
        if not found:
            return data
        start = self.rng.choice(found)
        stop = data.find(b"\n", start)
        stop = len(data) if stop < 0 else stop
        return data[:start] + self.rng.choice(TOKENS).strip(b"\n") + data[stop:]

    def stress(self) -> bytes:
        """Deep nesting, alias chains, long scalars, many documents or records (mostly small:
        the large ones are slow to load, and one in ten is enough)."""
        rng = self.rng
        large = rng.random() < 0.1
        depth = rng.choice((200, 5000) if large else (20, 62, 63, 64, 65, 66))
        kind = rng.randrange(8)
        if kind == 0:
            return b"a: " + b"[" * depth + b"]" * depth + b"\n"
        if kind == 1:
            return b"- " * depth + b"x\n"
        if kind == 2:
            return b"".join(b" " * i + b"a:\n" for i in range(min(depth, 300))) + b" " * depth + b"b\n"
        if kind == 3:
            return b"k: " + b"{a: " * depth + b"1" + b"}" * depth + b"\n"
        if kind == 4:
            width = rng.choice((2, 5, 10))
            lines = [b"a0: &a0 [x]"] + [
                f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]".encode()
                for i in range(1, rng.randrange(2, 30))
            ]
            return b"\n".join(lines) + b"\n"
        if kind == 5:
            size = rng.choice((70_000, 2**20) if large else (100, 1000, 5000))
            return b"key: " + rng.choice((b"x", b"\xc3\xa9", b"'", b" ")) * size + b"\n"
        if kind == 6:
            return b"---\n" * (5000 if large else 10) + b"kind: Record\n"
        items = "".join(f"  - key: k{i}\n    tags: [t{i % 3}]\n" for i in range(3000 if large else 10))
        return f"apiVersion: reconciler/v1\nkind: RecordSet\nnamespace: n\nrecords:\n{items}".encode()

    # --- documents from the schema ---

    def documents(self) -> bytes:
        """One to three documents of random kinds, some fields wrong, in a random YAML style."""
        self.wrong = self.rng.choice((0.0, 0.0, 0.02, 0.1, 0.3))
        count = self.rng.choice((1, 1, 2, 3))
        docs = [self._object(self.defs[self.rng.choice(self.kinds)], 0) for _ in range(count)]
        style = self.rng.choice(STYLES)
        try:
            text = yaml.dump_all(docs, Dumper=DUMPER, sort_keys=False, **style)
        except UnicodeEncodeError:  # libyaml's emitter refuses surrogates; the Python one escapes them
            text = yaml.dump_all(docs, Dumper=yaml.SafeDumper, sort_keys=False, **style)
        return text.encode("utf-8", "surrogatepass")

    def value(self, schema: dict[str, Any], depth: int) -> Any:
        """A value for ``schema``; with probability ``self.wrong``, one of another type."""
        rng = self.rng
        if "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[1]]
        if "anyOf" in schema:
            options = schema["anyOf"]
            schema = options[0] if rng.random() >= self.wrong + 0.1 else rng.choice(options)
        if rng.random() < self.wrong:
            return self.json(depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            most = schema.get("maxItems", 20)
            count = rng.choice((0, 1, 2, 3, 5, most + 1) if rng.random() < self.wrong else (0, 1, 2, 3, 5, 8))
            return [self.value(schema.get("items", {}), depth + 1) for _ in range(count)]
        if kind == "string":
            return self.string(schema)
        if kind == "integer":
            low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
            return rng.choice((low, low + 1, 720, 2**31, 2**63, 10**30))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return self.json(depth + 1)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        rng = self.rng
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        result: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required and rng.random() >= self.wrong or rng.random() < 0.5:
                result[name] = self.value(sub, depth + 1)
        if schema.get("additionalProperties", True) is not False or rng.random() < self.wrong:
            for _ in range(rng.choice((0, 0, 1, 3))):
                result[self.string({"maxLength": 12})] = self.json(depth + 1)
        return result

    def string(self, schema: dict[str, Any]) -> str:
        """Text within the schema's lengths, from its pattern's characters when it has one."""
        rng = self.rng
        low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
        wrong = rng.random() < self.wrong
        if wrong:
            length = rng.choice((max(low - 1, 0), low, high, high + 1))
        else:
            length = rng.randint(low, min(high, max(low, 12))) if rng.random() < 0.95 else high
        if "pattern" in schema and not wrong:
            first = "abcdefghij0123456789"
            alphabet = first + ("._-" if "." in schema["pattern"] else "")
            return "".join(rng.choice(alphabet if i else first) for i in range(max(length, 1)))
        pools = TEXT_POOLS + HOSTILE_POOLS if wrong else TEXT_POOLS
        pool = rng.choice(pools) if rng.random() < 0.5 else "".join(pools)
        text = "".join(rng.choice(pool) for _ in range(length))
        if not wrong and text.strip() != text and length:
            text = rng.choice("abc") + text.strip() + rng.choice("xyz")
        if rng.random() < 0.1:
            text = rng.choice(("${env:X}", "${env:MISSING}", "$${", "${env:}", "yes", "null", "")) + text
        return text

    def json(self, depth: int) -> Any:
        """Any JSON-like value, sometimes nested deeply."""
        rng = self.rng
        kind = rng.randrange(9 if depth < 66 else 6)
        leaves: tuple[Any, ...] = (None, True, 0, -1, 2**64, 1.5, -0.0, 1e308, "", "x", "yes", "0o17")
        if kind < 4:
            return rng.choice(leaves)
        if kind < 6:
            return self.string({"maxLength": rng.choice((3, 30, 300))})
        if kind == 6:
            return [self.json(depth + 1) for _ in range(rng.choice((0, 1, 2)))]
        if kind == 7 and rng.random() < 0.05:
            value: Any = rng.choice(leaves)
            for level in range(rng.choice((62, 63, 64, 65))):
                value = [value] if level % 2 else {"k": value}
            return value
        return {self.string({"maxLength": 8}): self.json(depth + 1) for _ in range(rng.choice((0, 1, 3)))}


def load_corpus() -> list[bytes]:
    """The example manifests and the hostile corpus, as bytes."""
    paths = sorted((REPO / "manifests").rglob("*.y*ml")) + sorted((REPO / "tests" / "bad").glob("*.yaml"))
    return [path.read_bytes() for path in paths]


def load_schema() -> dict[str, Any]:
    """The manifest JSON Schema the generated documents follow (mostly)."""
    schema: dict[str, Any] = json.loads((REPO / "schemas" / "manifest.schema.json").read_text("utf-8"))
    return schema
