"""The documentation is checked against the code.

* docs/hooks.md has a section for every ``kestrel_*`` hook spec (with the
  spec's signature) and every component interface, and none for hooks that do
  not exist; its examples register with pluggy and implement the interfaces;
* docs/profile-reference.md lists every key of every profile section and of
  every built-in component's Settings, with the code's type and default, and
  its example error messages are what ``kestrel profile check`` prints;
* docs/plugin-tutorial.md is followed as written: its files are extracted,
  its commands (``pip install``, ``kestrel ...``, ``python -m pytest``) run
  in a throwaway venv with Kestrel and no package index, they print what the
  page shows, the tutorial's sink writes the CSV the page shows, and the
  plugin's own tests pass;
* the commands, files and ``kestrel_core`` names the docs mention exist.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest

from kestrel_core import hookspecs, interfaces, profile
from kestrel_core.interfaces import ROLES, Component
from kestrel_core.plugins import PluginHost
sys.path.append(str(Path(__file__).resolve().parent))  # for tests/thirdparty (import-mode=importlib)
from thirdparty.helpers import Block, fenced_blocks, in_order, make_venv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# --------------------------------------------------------------------------- markdown helpers


def sections(text: str) -> dict[str, str]:
    """heading text -> body up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    heads = []
    in_code = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^(#+)\s+(.*?)\s*$", line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2)))
    out = {}
    for n, (i, level, title) in enumerate(heads):
        end = next((j for j, lvl, _ in heads[n + 1:] if lvl <= level), len(lines))
        assert title not in out, f"duplicate heading {title!r}"
        out[title] = "\n".join(lines[i + 1:end])
    return out


def table_rows(body: str) -> dict[str, list[str]]:
    """First-column key (in backticks) -> the row's cells, for markdown tables."""
    rows = {}
    for line in body.splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def python_blocks(body: str) -> list[Block]:
    return [b for b in fenced_blocks(body) if b.lang == "python"]


# --------------------------------------------------------------------------- (a) hooks.md


HOOKS_MD = DOCS / "hooks.md"


def hook_specs() -> dict[str, typing.Callable]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("kestrel_") and callable(fn) and hasattr(fn, marker)}


def _norm_annotation(text: str) -> str:
    return re.sub(r"[\s\"']", "", text)


def test_hookspecs_are_found():
    specs = hook_specs()
    assert "kestrel_register_sources" in specs and "kestrel_run_stop" in specs
    assert all(name.startswith("kestrel_") for name in specs)


def test_every_hook_has_a_section_and_every_section_a_hook():
    titles = sections(HOOKS_MD.read_text(encoding="utf-8"))
    documented = {t for t in titles if re.fullmatch(r"kestrel_\w+", t)}
    specs = set(hook_specs())
    assert not specs - documented, f"hooks without a section in docs/hooks.md: {sorted(specs - documented)}"
    assert not documented - specs, f"docs/hooks.md documents hooks that do not exist: {sorted(documented - specs)}"
    # and no stray mention of a hook name that does not exist anywhere on the page
    mentioned = set(re.findall(r"\bkestrel_(?:register|run)_\w+", HOOKS_MD.read_text(encoding="utf-8")))
    typos = mentioned - specs - {"kestrel_register_sink"}  # the page's own example of a misspelt hook
    assert not typos, f"docs/hooks.md names hooks that do not exist: {sorted(typos)}"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_section_shows_the_spec_signature_and_an_example(name):
    body = sections(HOOKS_MD.read_text(encoding="utf-8"))[name]
    blocks = python_blocks(body)
    assert len(blocks) >= 2, f"{name}: expected a signature block and an example block"
    sig_src = blocks[0].body.strip()
    tree = ast.parse(sig_src + ("" if sig_src.endswith(":") else ": ..."))
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.name == name, f"{name}: first block is not its signature"
    spec = inspect.signature(hook_specs()[name])
    documented = [(a.arg, _norm_annotation(ast.unparse(a.annotation)) if a.annotation else "") for a in fn.args.args]
    actual = [(p.name, _norm_annotation(str(p.annotation))) for p in spec.parameters.values()]
    assert documented == actual, f"{name}: documented {documented}, spec has {actual}"
    assert _norm_annotation(ast.unparse(fn.returns) if fn.returns else "") == _norm_annotation(
        str(spec.return_annotation)), f"{name}: return annotation differs"
    example = ast.parse(blocks[1].body)
    impls = [n for n in ast.walk(example) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert impls, f"{name}: the example does not implement the hook"
    assert any(isinstance(d, ast.Name) and d.id == "hookimpl" for d in impls[0].decorator_list), \
        f"{name}: the example implementation is not marked @hookimpl"
    params = {a.arg for a in impls[0].args.args}
    assert params <= set(spec.parameters), f"{name}: example takes arguments the spec does not pass: {params}"


def _public_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, classmethod))
            and not isinstance(v, type)}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_interface_has_a_section_naming_its_methods(role):
    cls = ROLES[role]
    titles = sections(HOOKS_MD.read_text(encoding="utf-8"))
    assert cls.__name__ in titles, f"docs/hooks.md has no section '### {cls.__name__}' for role {role!r}"
    body = titles[cls.__name__]
    missing = sorted(m for m in _public_methods(cls) if f"`{m}(" not in body)
    assert not missing, f"{cls.__name__}: methods not documented in its section: {missing}"
    assert python_blocks(body), f"{cls.__name__}: no example"
    for block in python_blocks(body):
        ast.parse(block.body)


def test_component_base_attributes_are_documented():
    body = sections(HOOKS_MD.read_text(encoding="utf-8"))["Component interfaces"]
    names = {n for n in vars(Component) if not n.startswith("_")} | {"__init__"}
    missing = sorted(n for n in names if f"`{n}" not in body)
    assert not missing, f"Component attributes not documented: {missing}"
    for cls in (interfaces.CompiledPredicate,):
        assert all(f"{cls.__name__}.{m}(" in HOOKS_MD.read_text(encoding="utf-8") for m in _public_methods(cls))


def test_hooks_md_python_blocks_parse():
    for block in python_blocks(HOOKS_MD.read_text(encoding="utf-8")):
        src = block.body.strip()
        if re.fullmatch(r"def \w+\(.*\)\s*->\s*.+", src, re.S):
            src += ": ..."
        try:
            ast.parse(src)
        except SyntaxError as exc:
            pytest.fail(f"docs/hooks.md line {block.line}: {exc}")


# --------------------------------------------------------------------------- (b) profile-reference.md


REFERENCE_MD = DOCS / "profile-reference.md"


def type_word(tp: typing.Any) -> str:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        return f"list of {type_word(arg)}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean", dict: "table"}.get(tp, str(tp))


def toml_value(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value == {}:
        return "{}"
    raise AssertionError(f"no TOML rendering for {value!r}")


def settings_rows(cls: type) -> dict[str, tuple[str, str]]:
    """key -> (type, default) as profile-reference.md writes them."""
    out = {}
    for f in attrs.fields(attrs.resolve_types(cls)):
        if f.default is attrs.NOTHING:
            default = "required"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = toml_value(f.default.factory())
        else:
            default = toml_value(f.default)
        out[f.name] = (type_word(f.type), default)
    return out


def check_table(title: str, cls: type) -> None:
    titles = sections(REFERENCE_MD.read_text(encoding="utf-8"))
    assert title in titles, f"docs/profile-reference.md has no section '{title}'"
    rows = table_rows(titles[title])
    expected = settings_rows(cls)
    assert not set(expected) - set(rows), f"{title}: keys not documented: {sorted(set(expected) - set(rows))}"
    assert not set(rows) - set(expected) - {"type", "normalizer"}, \
        f"{title}: documents keys the code does not have: {sorted(set(rows) - set(expected))}"
    for key, (tp, default) in expected.items():
        cells = rows[key]
        assert cells[0] == tp, f"{title} `{key}`: type is {tp!r} in the code, {cells[0]!r} in the docs"
        assert cells[1].strip("`") == default, f"{title} `{key}`: default is {default} in the code, {cells[1]} in the docs"
        assert cells[2], f"{title} `{key}`: no description"


@pytest.mark.parametrize("name", sorted(profile.SECTIONS))
def test_every_profile_section_key_is_documented(name):
    check_table(f"[{name}]", profile.SECTIONS[name])


@pytest.mark.parametrize("table", sorted(profile.ROLE_TABLES))
def test_component_tables_are_documented(table):
    body = sections(REFERENCE_MD.read_text(encoding="utf-8")).get(f"[[{table}]]")
    assert body is not None, f"docs/profile-reference.md has no section '[[{table}]]'"
    assert "`type`" in body


def builtin_components() -> list[tuple[str, str, type]]:
    host = PluginHost()
    host.load([])
    return sorted((role, comp.name, comp.cls) for role, comp in host.registry.components("core"))


def test_every_builtin_component_settings_key_is_documented():
    comps = builtin_components()
    assert {("source", "jsonl"), ("sink", "console")} <= {(r, n) for r, n, _ in comps}
    for role, name, cls in comps:
        check_table(f"{role} `{name}`", cls.Settings)


def run_kestrel(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_profile_reference_error_examples_are_real(tmp_path):
    """Blocks ```toml file=X are written out; ```text expect=check:X is what
    `kestrel profile check X` prints (in order; other lines may come between)."""
    blocks = list(fenced_blocks(REFERENCE_MD.read_text(encoding="utf-8")))
    files = {b.attrs["file"]: b for b in blocks if "file" in b.attrs}
    checks = [b for b in blocks if b.attrs.get("expect", "").startswith("check:")]
    assert len(checks) >= 4, "profile-reference.md should show real validation errors"
    for name, block in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(block.body, encoding="utf-8")
    for block in checks:
        target = block.attrs["expect"].split(":", 1)[1]
        assert target in files, f"line {block.line}: no ```toml file={target} block"
        proc = run_kestrel(["profile", "check", target], tmp_path)
        got = (proc.stdout + proc.stderr).splitlines()
        want = block.body.splitlines()
        assert in_order(want, got), f"profile-reference.md line {block.line}: `kestrel profile check {target}` " \
                                    f"printed:\n{proc.stdout}{proc.stderr}\nthe page shows:\n{block.body}"
        ok = any(line.endswith(": ok") or ": ok (" in line for line in want)
        assert (proc.returncode == 0) == ok, f"line {block.line}: exit code {proc.returncode}"


# --------------------------------------------------------------------------- (c) the tutorial


TUTORIAL_MD = DOCS / "plugin-tutorial.md"
TUTORIAL_DIST = "kestrel-execlog"
RUN_BLOCKS = {"install", "profile-check", "run", "plugin-tests"}
"""The tutorial's console blocks whose commands this test runs as written."""

# While the tutorial's commands run, pip may use only what is installed: no
# index and none of this machine's pip configuration (extra indexes,
# find-links), so a dependency the venv lacks fails at once instead of being
# fetched under that name from an index.  No build isolation: the build
# backend is the test venv's setuptools.
OFFLINE_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def command_lines(block: Block) -> list[str]:
    return [line[2:] for line in block.body.splitlines() if line.startswith("$ ")]


def output_lines(block: Block) -> list[str]:
    return [line for line in block.body.splitlines() if not line.startswith("$ ")]


def run_line(venv, command: str, cwd: Path) -> subprocess.CompletedProcess:
    """One of the tutorial's command lines, run by a shell as written, with
    ``venv`` activated (its bin/ first on PATH: its pip, python and kestrel)."""
    env = {k: v for k, v in venv.env().items() if not k.startswith("PIP_")} | OFFLINE_PIP
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The tutorial followed in a fresh directory and a fresh venv that has
    Kestrel (section 0: the venv Kestrel is installed in; the throwaway venv
    sees this one's packages, so the plugin lands in the throwaway one only)."""
    work = tmp_path_factory.mktemp("execlog-tutorial")
    blocks = list(fenced_blocks(TUTORIAL_MD.read_text(encoding="utf-8")))
    files = [b for b in blocks if "file" in b.attrs]
    for b in files:
        path = work / b.attrs["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(b.body, encoding="utf-8")
    expect = {b.attrs["expect"]: b for b in blocks if "expect" in b.attrs}
    venv = make_venv(tmp_path_factory.mktemp("venv") / "venv")
    (install,) = command_lines(expect["install"])
    proc = run_line(venv, install, work)
    assert proc.returncode == 0, f"`{install}` failed:\n{proc.stdout}{proc.stderr}"
    return SimpleNamespace(work=work, venv=venv, files={b.attrs["file"] for b in files}, expect=expect)


def test_tutorial_plugin_is_not_in_the_test_environment():
    """The tutorial's distribution must come from the page, not from an install in the main venv."""
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(TUTORIAL_DIST)


def test_tutorial_has_the_blocks_this_test_runs(tutorial):
    assert {f"{TUTORIAL_DIST}/pyproject.toml", f"{TUTORIAL_DIST}/kestrel_execlog/plugin.py", "execlog.toml",
            "exec.log"} <= tutorial.files
    assert RUN_BLOCKS | {"plugins-list", "missing-path", "alerts.csv"} <= set(tutorial.expect)


def test_tutorial_setup_says_which_venv_and_every_later_command_is_run():
    """Section 0 says the commands assume an activated venv with Kestrel;
    every command after it is one this test runs as written."""
    text = TUTORIAL_MD.read_text(encoding="utf-8")
    setup = sections(text)["0. Before you start"]
    assert "activate" in setup and "kestrel-edr" in setup
    first_step = text.splitlines().index("## 1. The layout") + 1
    for block in fenced_blocks(text):
        if block.line > first_step and command_lines(block):
            assert block.attrs.get("expect") in RUN_BLOCKS, \
                f"plugin-tutorial.md line {block.line}: commands this test does not run: {command_lines(block)}"


def test_tutorial_says_where_each_file_goes():
    lines = TUTORIAL_MD.read_text(encoding="utf-8").splitlines()
    for block in fenced_blocks("\n".join(lines)):
        if "file" in block.attrs:
            before = next(line for line in reversed(lines[:block.line - 1]) if line.strip())
            assert f"`{block.attrs['file']}`" in before, \
                f"plugin-tutorial.md line {block.line}: the text before the block does not name its path " \
                f"`{block.attrs['file']}`: {before!r}"


def test_tutorial_depends_on_the_core_by_its_distribution_name(tutorial):
    meta = tomllib.loads((tutorial.work / TUTORIAL_DIST / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["dependencies"] == ["kestrel-edr"]
    own = [p.name for p in tutorial.venv.site_packages.glob("*.dist-info")]
    assert len(own) == 1 and own[0].startswith("kestrel_execlog-"), \
        f"`pip install ./{TUTORIAL_DIST}` installed into the venv: {own}"


def test_tutorial_describes_both_rule_file_formats():
    """The tutorial's rule file uses [[rule]] tables; it says the bundled pack
    uses one rule per file, which must stay true."""
    text = " ".join(TUTORIAL_MD.read_text(encoding="utf-8").split())
    for phrase in ("[[rule]]", "One rule per file", "[[test]]", "rules/linux", "pack.toml", "rule-packs.md"):
        assert phrase in text, f"plugin-tutorial.md does not mention {phrase!r}"
    linux = ROOT / "rules" / "linux"
    rule_files = [p for p in linux.rglob("*.toml") if p.name != "pack.toml"]
    assert rule_files and (linux / "pack.toml").exists()
    multi = [p for p in rule_files if "rule" in tomllib.loads(p.read_text(encoding="utf-8"))]
    assert not multi, f"rules/linux is no longer one rule per file: {multi[:3]}"


def test_tutorial_plugin_is_listed(tutorial):
    proc = run_line(tutorial.venv, "kestrel plugins list", tutorial.work)
    assert proc.returncode == 0, proc.stderr
    shown = tutorial.expect["plugins-list"].body
    assert shown in proc.stdout, f"`kestrel plugins list` printed:\n{proc.stdout}\nthe tutorial shows:\n{shown}"


def test_tutorial_profile_check(tutorial):
    block = tutorial.expect["profile-check"]
    (cmd,) = command_lines(block)
    proc = run_line(tutorial.venv, cmd, tutorial.work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == output_lines(block)


def test_tutorial_missing_key_error(tutorial):
    """The error the tutorial shows for a source table without `path`."""
    text = (tutorial.work / "execlog.toml").read_text(encoding="utf-8")
    assert 'path = "exec.log"\n' in text
    bad = tutorial.work / "missing-path" / "execlog.toml"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(text.replace('path = "exec.log"\n', ""), encoding="utf-8")
    (cmd,) = command_lines(tutorial.expect["profile-check"])
    proc = run_line(tutorial.venv, cmd, bad.parent)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == output_lines(tutorial.expect["missing-path"])


def test_tutorial_run_writes_the_alerts_shown(tutorial):
    block = tutorial.expect["run"]
    (cmd,) = command_lines(block)
    csv_path = tutorial.work / "alerts.csv"
    csv_path.unlink(missing_ok=True)
    proc = run_line(tutorial.venv, cmd, tutorial.work)
    assert proc.returncode == 0, proc.stderr
    got = (proc.stdout + proc.stderr).splitlines()
    assert in_order(output_lines(block), got), f"`{cmd}` printed:\n{proc.stdout}{proc.stderr}"
    assert csv_path.read_text(encoding="utf-8") == tutorial.expect["alerts.csv"].body, \
        "the CSV the tutorial's sink wrote differs from the page"


def test_tutorial_plugin_own_tests_pass(tutorial):
    tests = tutorial.work / TUTORIAL_DIST / "tests"
    assert any(tests.glob("test_*.py")), "the tutorial's plugin tests were not extracted"
    (cmd,) = command_lines(tutorial.expect["plugin-tests"])
    proc = run_line(tutorial.venv, cmd, tutorial.work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b[1-9]\d* passed", proc.stdout), proc.stdout


# --------------------------------------------------------------------------- references in prose


REFERENCE_DOCS = [DOCS / "architecture.md", DOCS / "hooks.md", DOCS / "profile-reference.md", TUTORIAL_MD]


def inline_code(text: str) -> list[str]:
    """Backticked spans outside fenced blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", text)


def test_kestrel_commands_named_in_the_docs_exist():
    import click

    from kestrel_core.cli import main

    seen = set()
    for doc in REFERENCE_DOCS:
        text = doc.read_text(encoding="utf-8")
        spans = inline_code(text) + [line[2:] for line in text.splitlines() if line.startswith("$ kestrel ")]
        for span in spans:
            if not span.startswith("kestrel "):
                continue
            words = span.split()[1:]
            cmd: click.Command = main
            for word in words:
                if not isinstance(cmd, click.Group) or not re.fullmatch(r"[a-z]+", word):
                    break
                sub = cmd.get_command(click.Context(cmd), word)  # plugin commands are looked up lazily
                assert sub is not None, f"{doc.name}: `{span}`: no command {word!r}"
                cmd = sub
            assert not isinstance(cmd, click.Group), f"{doc.name}: `{span}` names a group, not a command"
            seen.add(span.split()[1])
    assert {"run", "plugins", "profile"} <= seen


def test_files_and_python_names_named_in_the_docs_exist():
    import importlib

    checked = 0
    for doc in REFERENCE_DOCS[:3]:  # the tutorial's paths are the tutorial's own files
        for span in inline_code(doc.read_text(encoding="utf-8")):
            if re.fullmatch(r"[\w./-]+\.py|(?:kestrel_core|plugins)/[\w./-]*", span):
                bases = (ROOT, ROOT / "kestrel_core", ROOT / "kestrel_core" / "eql")
                assert any((b / span).exists() for b in bases), f"{doc.name}: `{span}` does not exist"
                checked += 1
            elif re.fullmatch(r"kestrel_core(\.\w+)+", span):
                parts = span.split(".")
                for i in range(len(parts), 0, -1):
                    try:
                        obj = importlib.import_module(".".join(parts[:i]))
                    except ImportError:
                        continue
                    for attr in parts[i:]:
                        assert hasattr(obj, attr), f"{doc.name}: `{span}`: {obj!r} has no {attr!r}"
                        obj = getattr(obj, attr)
                    break
                else:
                    pytest.fail(f"{doc.name}: `{span}` does not import")
                checked += 1
    assert checked >= 10


# --------------------------------------------------------------------------- hooks.md examples run


def _example_namespace() -> dict:
    import os
    import signal
    import types

    from kestrel_core import hookimpl
    from kestrel_core.event import Event
    from kestrel_core.interfaces import CompiledPredicate, NormalizeError

    ns = {"hookimpl": hookimpl, "attrs": attrs, "os": os, "signal": signal, "Event": Event,
          "NormalizeError": NormalizeError, "CompiledPredicate": CompiledPredicate, "types": types}
    ns.update({cls.__name__: cls for cls in ROLES.values()})
    return ns


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_example_registers_with_pluggy(name):
    """The example is a valid implementation: pluggy accepts it against the spec."""
    import types

    import pluggy

    body = sections(HOOKS_MD.read_text(encoding="utf-8"))[name]
    example = python_blocks(body)[1]
    mod = types.ModuleType(f"example_{name}")
    exec(compile(example.body, f"docs/hooks.md:{example.line}", "exec"), mod.__dict__ | _example_namespace(),
         mod.__dict__)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(mod, name="example")
    pm.check_pending()
    assert [impl.plugin_name for impl in getattr(pm.hook, name).get_hookimpls()] == ["example"]


def test_lifecycle_examples_run():
    from kestrel_core.testing import make_context

    titles = sections(HOOKS_MD.read_text(encoding="utf-8"))
    context = make_context()
    context.components = {"source": [], "sink": [], "action": [], "runtime": []}
    for name, kwargs in (("kestrel_run_start", {"context": context}),
                         ("kestrel_run_stop", {"context": context, "reason": "eof"})):
        ns = _example_namespace()
        exec(python_blocks(titles[name])[1].body, ns)
        ns[name](**kwargs)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_interface_examples_are_concrete_components(role):
    """Each example class implements every abstract method of its interface and
    is accepted by the component registry."""
    from kestrel_core.plugins import ComponentRegistry

    cls = ROLES[role]
    body = sections(HOOKS_MD.read_text(encoding="utf-8"))[cls.__name__]
    ns = _example_namespace()
    for block in python_blocks(body):
        exec(compile(block.body, f"docs/hooks.md:{block.line}", "exec"), ns)
    defined = [v for k, v in ns.items() if isinstance(v, type) and issubclass(v, cls) and v is not cls]
    assert defined, f"{cls.__name__}: the example defines no {cls.__name__} subclass"
    registry = ComponentRegistry()
    for comp in defined:
        assert not inspect.isabstract(comp), f"{comp.__name__} leaves abstract methods: {comp.__abstractmethods__}"
        registry.add(role, comp, "docs")
    for value in ns.values():  # helper classes (CompiledPredicate) must be concrete too
        if isinstance(value, type) and issubclass(value, interfaces.CompiledPredicate):
            assert value is interfaces.CompiledPredicate or not inspect.isabstract(value)
