"""Lint the Azure infrastructure and the GitHub workflows.

Run by ``make infra-lint``. Three checks, each one failing the run:

1. Every ``.bicep`` and ``.bicepparam`` file under ``infra/`` parses with tree-sitter-bicep: each ERROR or
   MISSING node is reported as ``file:line:column``. A ``.bicepparam`` file is also checked against the template
   it names in ``using``: every assigned parameter must be declared there, every parameter without a default
   must be assigned.
2. checkov scans ``infra/`` (framework ``bicep``) and ``.github/workflows`` (framework ``github_actions``) with
   no failed check and no parsing error (a file checkov cannot parse is a file it did not check). Inline
   ``checkov:skip`` comments with their justification are listed.
3. ``az bicep build`` / ``az bicep build-params`` compile each file, only where the Azure CLI is on PATH;
   otherwise the run says clearly that the compile step was skipped.

There is no Bicep compiler to be had without the Azure CLI, so steps 1 and 2 are what runs on machines without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

LOG = logging.getLogger("infra_lint")
ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
WORKFLOWS = ROOT / ".github" / "workflows"

# A .bicepparam assignment `param name = value` is not in tree-sitter-bicep's grammar (it knows `param name type
# = value`). Rewriting it to `param name any = value` on the same line keeps every line number and lets the
# Bicep expression grammar check the value.
_PARAM_ASSIGNMENT = re.compile(r"^(\s*param\s+[A-Za-z_][A-Za-z0-9_]*)(\s*=)", re.MULTILINE)
_USING = re.compile(r"^\s*using\s+'([^']+)'", re.MULTILINE)

# Placeholder values for readEnvironmentVariable() calls without a default, used only for `az bicep
# build-params` (documentation address ranges and IDs, never real ones).
_BUILD_PARAMS_ENV = {
    "AKS_AUTHORIZED_IP_RANGES": "203.0.113.0/24",
    "APIM_PUBLISHER_EMAIL": "platform@example.com",
    "AKS_ADMIN_GROUP_ID": "00000000-0000-0000-0000-000000000000",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem found in one file.

    Attributes:
        path: File the problem is in.
        line: 1-based line number (0 when the problem concerns the whole file).
        column: 1-based column number (0 when unknown).
        message: What is wrong.
    """

    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        """Render as ``file:line:column: message`` with the path relative to the repository root."""
        try:
            shown = self.path.resolve().relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}:{self.column}: {self.message}"


@dataclasses.dataclass(frozen=True)
class ParamDecl:
    """A ``param`` declared in a Bicep template.

    Attributes:
        name: Parameter name.
        has_default: Whether the declaration assigns a default value.
        type_name: Declared type (``string``, ``int``, ``bool``, ``object``, ``array``, ...).
        decorators: Names of the decorators that precede it (``sys.`` prefix dropped).
        line: 1-based line of the declaration.
    """

    name: str
    has_default: bool
    type_name: str
    decorators: frozenset[str]
    line: int

    @property
    def has_description(self) -> bool:
        """Whether a ``@description`` (or ``@sys.description``) decorator precedes the declaration."""
        return "description" in self.decorators


def bicep_files(root: Path = INFRA) -> list[Path]:
    """List every ``.bicep`` and ``.bicepparam`` file under ``root``.

    Args:
        root: Directory to search.

    Returns:
        The files, sorted.
    """
    return sorted([*root.rglob("*.bicep"), *root.rglob("*.bicepparam")])


def _parser() -> Any:
    """Build a tree-sitter parser for Bicep.

    Returns:
        A ``tree_sitter.Parser`` set to the Bicep language.
    """
    import tree_sitter_bicep
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bicep.language()))


def bicepparam_as_bicep(source: str) -> str:
    """Rewrite ``.bicepparam`` assignments into declarations tree-sitter-bicep parses, keeping line numbers.

    Args:
        source: Text of a ``.bicepparam`` file.

    Returns:
        The same text with every ``param name =`` turned into ``param name any =``.
    """
    return _PARAM_ASSIGNMENT.sub(r"\1 any\2", source)


def parse_tree(source: str, *, bicepparam: bool = False) -> Any:
    """Parse Bicep source with tree-sitter-bicep.

    Args:
        source: The text to parse.
        bicepparam: Treat the text as a ``.bicepparam`` file.

    Returns:
        The ``tree_sitter.Tree``.
    """
    text = bicepparam_as_bicep(source) if bicepparam else source
    return _parser().parse(text.encode("utf-8"))


def syntax_errors(source: str, path: Path, *, bicepparam: bool = False) -> list[Finding]:
    """Find every ERROR and MISSING node in the parse tree of ``source``.

    Args:
        source: The text to parse.
        path: File name used in the findings.
        bicepparam: Treat the text as a ``.bicepparam`` file.

    Returns:
        One finding per ERROR or MISSING node, in document order.
    """
    findings: list[Finding] = []
    stack = [parse_tree(source, bicepparam=bicepparam).root_node]
    while stack:
        node = stack.pop()
        if node.is_missing:
            findings.append(Finding(path, node.start_point[0] + 1, node.start_point[1] + 1, f"MISSING {node.type}"))
        elif node.is_error:
            snippet = node.text.decode("utf-8", "replace").splitlines()[0][:60] if node.text else ""
            findings.append(Finding(path, node.start_point[0] + 1, node.start_point[1] + 1, f"ERROR near {snippet!r}"))
        stack.extend(reversed(node.children))
    return sorted(findings, key=lambda f: (f.line, f.column))


def _decorator_names(decorators: Any) -> set[str]:
    """Names of the decorators in a ``decorators`` node (``@sys.description`` counts as ``description``)."""
    names: set[str] = set()
    for decorator in decorators.named_children:
        text = decorator.text.decode("utf-8") if decorator.text else ""
        match = re.match(r"@\s*(?:sys\.)?([A-Za-z_]+)", text)
        if match:
            names.add(match.group(1))
    return names


def param_declarations(source: str) -> list[ParamDecl]:
    """List the ``param`` declarations of a Bicep template.

    Args:
        source: Text of a ``.bicep`` file.

    Returns:
        The declarations in document order.
    """
    root = parse_tree(source).root_node
    params: list[ParamDecl] = []
    children = [c for c in root.children if c.type != "comment"]
    for index, node in enumerate(children):
        if node.type != "parameter_declaration":
            continue
        name_node = next((c for c in node.named_children if c.type == "identifier"), None)
        if name_node is None or name_node.text is None:
            continue
        type_node = next((c for c in node.named_children if c.type == "type"), None)
        previous = children[index - 1] if index > 0 else None
        decorators = _decorator_names(previous) if previous is not None and previous.type == "decorators" else set()
        params.append(
            ParamDecl(
                name=name_node.text.decode("utf-8"),
                has_default=any(c.type == "=" for c in node.children),
                type_name=type_node.text.decode("utf-8") if type_node is not None and type_node.text else "",
                decorators=frozenset(decorators),
                line=node.start_point[0] + 1,
            )
        )
    return params


def bicepparam_consistency(path: Path) -> list[Finding]:
    """Check a ``.bicepparam`` file against the template it names in ``using``.

    Args:
        path: The ``.bicepparam`` file.

    Returns:
        Findings for a missing ``using`` target, assignments of undeclared parameters and required parameters
        left unassigned.
    """
    source = path.read_text(encoding="utf-8")
    using = _USING.search(source)
    if using is None:
        return [Finding(path, 1, 1, "no `using '<template>.bicep'` statement")]
    template = (path.parent / using.group(1)).resolve()
    if not template.is_file():
        return [Finding(path, 1, 1, f"`using` target {using.group(1)} does not exist")]
    declared = {p.name: p for p in param_declarations(template.read_text(encoding="utf-8"))}
    assigned: dict[str, int] = {}
    for match in _PARAM_ASSIGNMENT.finditer(source):
        name = match.group(1).split()[-1]
        assigned[name] = source.count("\n", 0, match.start()) + 1
    findings = [
        Finding(path, line, 1, f"param {name} is not declared in {template.name}")
        for name, line in assigned.items()
        if name not in declared
    ]
    findings += [
        Finding(path, 0, 0, f"required param {name} of {template.name} is not assigned")
        for name, decl in declared.items()
        if not decl.has_default and name not in assigned
    ]
    return findings


def check_parse(files: Iterable[Path]) -> list[Finding]:
    """Parse every file with tree-sitter-bicep and check each ``.bicepparam`` against its template.

    Args:
        files: ``.bicep`` and ``.bicepparam`` files.

    Returns:
        All findings; empty when every file is clean.
    """
    findings: list[Finding] = []
    for path in files:
        is_param_file = path.suffix == ".bicepparam"
        findings += syntax_errors(path.read_text(encoding="utf-8"), path, bicepparam=is_param_file)
        if is_param_file:
            findings += bicepparam_consistency(path)
    return findings


def checkov_binary() -> str | None:
    """Locate checkov: the project's ``.venv/bin/checkov`` first, then PATH.

    Returns:
        The path of the executable, or None when there is none.
    """
    local = ROOT / ".venv" / "bin" / "checkov"
    if local.exists():
        return str(local)
    return shutil.which("checkov")


def run_checkov(directory: Path, framework: str, binary: str) -> tuple[list[str], list[str]]:
    """Run checkov on one directory with one framework.

    Args:
        directory: What to scan.
        framework: checkov framework (``bicep``, ``github_actions``).
        binary: checkov executable.

    Returns:
        ``(problems, skipped)``: one line per failed check or parsing error (empty when clean) and one line per
        check suppressed inline, with its justification.
    """
    cmd = [binary, "-d", str(directory), "--framework", framework, "-o", "json", "--skip-download"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    LOG.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        return [f"checkov {framework}: unreadable output (exit {proc.returncode}): {proc.stderr[-500:]}"], []
    reports = data if isinstance(data, list) else [data]
    problems: list[str] = []
    skipped: list[str] = []
    scanned = 0
    for report in reports:
        if not report:
            continue
        summary = report.get("summary", {})
        results = report.get("results", {})
        scanned += sum(int(summary.get(key, 0)) for key in ("passed", "failed", "skipped"))
        for failed in results.get("failed_checks", []):
            problems.append(
                f"{failed['file_path'].lstrip('/')}:{failed['file_line_range'][0]}: {failed['check_id']} "
                f"{failed['check_name']} ({failed['resource']})"
            )
        for item in results.get("skipped_checks", []):
            comment = item.get("check_result", {}).get("suppress_comment", "").strip()
            skipped.append(f"{item['file_path'].lstrip('/')}: {item['check_id']} ({item['resource']}): {comment}")
        if int(summary.get("parsing_errors", 0)):
            for error in results.get("parsing_errors", []) or ["(file not named)"]:
                problems.append(f"checkov {framework} could not parse {error}: it was not checked")
            if not results.get("parsing_errors"):
                problems.append(f"checkov {framework}: {summary['parsing_errors']} parsing error(s)")
    if scanned == 0:
        problems.append(f"checkov {framework} ran no check in {directory} (exit {proc.returncode})")
    return problems, skipped


def check_checkov(targets: Sequence[tuple[Path, str]]) -> list[str]:
    """Run checkov on each target and collect the problems, logging the inline skips.

    Args:
        targets: ``(directory, framework)`` pairs.

    Returns:
        One line per problem; empty when every scan passed.
    """
    binary = checkov_binary()
    if binary is None:
        return ["checkov is not installed (run `make install`)"]
    problems: list[str] = []
    for directory, framework in targets:
        found, skipped = run_checkov(directory, framework, binary)
        for line in skipped:
            LOG.info("checkov skip: %s", line)
        if found:
            problems += found
        else:
            LOG.info(
                "checkov %s on %s: no failed checks (%d skipped inline, listed above)",
                framework,
                directory.relative_to(ROOT),
                len(skipped),
            )
    return problems


def check_az_build(files: Iterable[Path]) -> list[str] | None:
    """Compile every file with the Bicep compiler of the Azure CLI.

    Args:
        files: ``.bicep`` and ``.bicepparam`` files.

    Returns:
        One line per file that failed to compile, or None when ``az`` is not on PATH (nothing was compiled).
    """
    az = shutil.which("az")
    if az is None:
        return None
    env = {**_BUILD_PARAMS_ENV, **os.environ}
    problems: list[str] = []
    for path in files:
        verb = "build-params" if path.suffix == ".bicepparam" else "build"
        cmd = [az, "bicep", verb, "--file", str(path), "--stdout"]
        LOG.info("$ %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            problems.append(f"{path.relative_to(ROOT)}: az bicep {verb} failed:\n{proc.stderr.strip()}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks and report.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        0 when every check passed, 1 otherwise.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-checkov", action="store_true", help="skip the checkov scans (parse only)")
    args = parser.parse_args(argv)

    files = bicep_files()
    if not files:
        LOG.error("no .bicep or .bicepparam files under %s", INFRA)
        return 1
    failed = False

    findings = check_parse(files)
    for finding in findings:
        LOG.error("%s", finding)
    if findings:
        failed = True
    else:
        LOG.info("tree-sitter-bicep: %d files parse with no ERROR or MISSING node", len(files))

    if args.no_checkov:
        LOG.warning("checkov skipped (--no-checkov)")
    else:
        problems = check_checkov([(INFRA, "bicep"), (WORKFLOWS, "github_actions")])
        for problem in problems:
            LOG.error("checkov: %s", problem)
        failed = failed or bool(problems)

    built = check_az_build(files)
    if built is None:
        LOG.warning("az bicep build SKIPPED: the Azure CLI (az) is not on PATH, so no file was compiled")
    else:
        for problem in built:
            LOG.error("%s", problem)
        failed = failed or bool(built)
        if not built:
            LOG.info("az bicep build: %d files compile", len(files))

    if failed:
        LOG.error("infra-lint FAILED")
        return 1
    LOG.info("infra-lint passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
