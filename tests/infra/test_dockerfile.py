"""The multi-stage Dockerfile: targets, user, entry points, and that no source tree reaches an image.

No Docker engine runs here, so the Dockerfile is parsed and its stages checked against the runtime contract
(docs/METRICS.md), the package layout (pyproject.toml) and the chart's defaults.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
TARGETS = ("pipeline", "serve", "drift")
SERVE_ENTRYPOINT = ["python", "-m", "serving"]
SERVE_CMD = [
    "--model_name",
    "fraud-detector",
    "--model_dir",
    "/mnt/models",
    "--http_port",
    "8080",
    "--grpc_port",
    "8081",
]
DRIFT_ENTRYPOINT = ["python", "-m", "monitoring.drift_job"]
# Each image installs the wheel with its own extra (pyproject.toml) and nothing else.
EXTRAS = {"pipeline": "pipeline", "serve": "serve", "drift": "monitor"}
# Distributions an image must (or must not) get from its extra, directly or through the project's own extras.
REQUIRED = {
    # kubernetes: only to pin kserve's own dependency to the platform's version.
    "serve": {"kserve", "orjson", "kubernetes", "azure-storage-blob", "azure-identity"},
    "pipeline": {"kfp", "kfp-kubernetes", "kubernetes", "matplotlib", "azure-storage-blob", "azure-identity"},
    "monitor": {"evidently", "kfp", "kfp-kubernetes", "azure-storage-blob", "azure-identity"},
}
FORBIDDEN = {
    "serve": {"kfp", "kfp-kubernetes", "evidently", "matplotlib"},
    "pipeline": {"evidently", "kserve"},
    "monitor": {"kserve", "matplotlib"},
}
ADAPTER_ONLY = {"kfp", "kfp-kubernetes", "kserve", "evidently", "matplotlib", "kubernetes", "orjson"}


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Join continuation lines and drop comments and blank lines."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(text: str) -> dict[str, Stage]:
    """Parse a Dockerfile into its stages (by name), resolving global ARG defaults in FROM."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"cannot parse FROM {rest}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            name = match.group(2) or f"stage{len(stages)}"
            stage = Stage(name=name, base=base)
            stages[name] = stage
        else:
            assert stage is not None, f"{keyword} before FROM"
            stage.instructions.append(Instruction(keyword, rest))
    return stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and its ancestors, nearest first."""
    out = []
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def effective(stages: dict[str, Stage], name: str, keyword: str) -> Instruction | None:
    """The instruction in force for a target (the last one along its FROM chain)."""
    for stage in chain(stages, name):
        found = stage.last(keyword)
        if found is not None:
            return found
    return None


def exec_form(instruction: Instruction | None) -> list[str] | None:
    if instruction is None:
        return None
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form"
    return value


def source_copies(stages: dict[str, Stage], name: str) -> list[str]:
    """COPY/ADD instructions of a target's runtime chain that read the build context (not another stage)."""
    bad = []
    for stage in chain(stages, name):
        if stage.name == "builder":
            break
        for ins in stage.instructions:
            if ins.keyword == "ADD" or (ins.keyword == "COPY" and "--from=" not in ins.args):
                bad.append(f"{stage.name}: {ins.keyword} {ins.args}")
    return bad


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text())


def test_targets_share_one_runtime_base(stages: dict[str, Stage]) -> None:
    assert set(TARGETS) <= set(stages)
    for target in TARGETS:
        assert stages[target].base == "runtime", target
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stages["runtime"].base), stages["runtime"].base
    assert stages["builder"].base == stages["runtime"].base


def test_builder_builds_the_wheel(stages: dict[str, Stage]) -> None:
    runs = " ".join(i.args for i in stages["builder"].all("RUN"))
    assert re.search(r"pip wheel --no-deps [^&]*\.(\s|$)", runs), runs
    # One wheelhouse for the three images: [platform] is the union of their extras.
    assert "[platform]" in runs


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirement_name(requirement: str) -> tuple[str, set[str]]:
    """A requirement's normalised distribution name and its extras (``a[b,c]>=1; marker`` -> ``a``, {b, c})."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    assert match, requirement
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), extras


def extra_closure(extra: str) -> set[str]:
    """Distributions an extra declares, following the project's references to its own extras (not transitive deps)."""
    meta = project()
    own = requirement_name(meta["name"])[0]
    names: set[str] = set()
    todo, seen = [extra], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in meta["optional-dependencies"][current]:
            name, extras = requirement_name(requirement)
            if name == own:
                todo.extend(extras)
            else:
                names.add(name)
    return names


def pip_installs(stage: Stage) -> list[Instruction]:
    return [i for i in stage.all("RUN") if "pip install" in i.args]


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_installs_the_same_wheel_with_its_own_extra(stages: dict[str, Stage], target: str) -> None:
    (install,) = pip_installs(stages[target])
    installed = re.findall(r"fraud-detection\[([^\]]+)\]", install.args)
    assert installed == [EXTRAS[target]], install.args
    assert "--no-index" in install.args, "install only from the builder's wheelhouse"
    assert "from=builder" in install.args
    assert re.search(r"&&\s*pip check\b", install.args), "the image's dependencies must be consistent"
    for other in set(EXTRAS.values()) - {EXTRAS[target]} | {"platform"}:
        assert f"[{other}]" not in install.args, f"{target} installs [{other}]"


def test_no_shared_install_in_the_runtime_base(stages: dict[str, Stage]) -> None:
    """The shared stage installs nothing, so no image inherits another image's dependencies."""
    assert pip_installs(stages["runtime"]) == []


@pytest.mark.parametrize("target", TARGETS)
def test_image_switches_to_uid_1000_after_installing(stages: dict[str, Stage], target: str) -> None:
    keywords = [i.keyword for i in stages[target].instructions]
    install = stages[target].instructions.index(pip_installs(stages[target])[0])
    assert "USER" in keywords[install + 1 :], f"{target}: USER 1000 must follow the install"


@pytest.mark.parametrize("extra", sorted(REQUIRED))
def test_extra_has_what_its_image_imports(extra: str) -> None:
    declared = extra_closure(extra)
    assert REQUIRED[extra] <= declared, REQUIRED[extra] - declared
    assert not FORBIDDEN[extra] & declared, FORBIDDEN[extra] & declared


def test_serve_image_is_free_of_kfp_evidently_and_matplotlib() -> None:
    """Neither the base dependencies nor [serve] declare them (kubernetes still comes in through kserve)."""
    base = {requirement_name(r)[0] for r in project()["dependencies"]}
    assert not {"kfp", "kfp-kubernetes", "evidently", "matplotlib"} & (base | extra_closure("serve"))


def test_base_dependencies_carry_no_adapter_library() -> None:
    base = {requirement_name(r)[0] for r in project()["dependencies"]}
    assert not ADAPTER_ONLY & base, ADAPTER_ONLY & base
    # The `fraud` console script is generated by every install of the wheel: its imports must be in the base.
    assert {"typer", "rich"} <= base
    assert "fraud" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_platform_is_the_union_of_the_image_extras() -> None:
    images = set().union(*(extra_closure(e) for e in EXTRAS.values()))
    assert extra_closure("platform") == images


def test_pipeline_image_keeps_matplotlib_off_the_read_only_root(stages: dict[str, Stage]) -> None:
    env = " ".join(i.args for s in chain(stages, "pipeline") for i in s.all("ENV"))
    assert "MPLCONFIGDIR=/tmp/" in env


@pytest.mark.parametrize("target", TARGETS)
def test_no_source_tree_in_the_images(stages: dict[str, Stage], target: str) -> None:
    assert source_copies(stages, target) == []


def test_source_copy_would_be_caught() -> None:
    broken = DOCKERFILE.read_text().replace('ENTRYPOINT ["python", "-m", "serving"]', 'COPY . /app\nENTRYPOINT ["x"]')
    assert source_copies(parse(broken), "serve") == ["serve: COPY . /app"]


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_uid_1000(stages: dict[str, Stage], target: str) -> None:
    user = effective(stages, target, "USER")
    assert user is not None
    assert user.args.split(":")[0] == "1000", "numeric, so runAsNonRoot can verify it"
    runs = " ".join(i.args for i in stages["runtime"].all("RUN"))
    assert re.search(r"useradd .*--uid 1000 .*\bfraud\b", runs)


def test_serve_target(stages: dict[str, Stage]) -> None:
    serve = stages["serve"]
    assert exec_form(effective(stages, "serve", "ENTRYPOINT")) == SERVE_ENTRYPOINT
    assert exec_form(effective(stages, "serve", "CMD")) == SERVE_CMD
    exposed = {p for i in serve.all("EXPOSE") for p in i.args.split()}
    assert exposed == {"8080", "8081"}
    healthcheck = serve.last("HEALTHCHECK")
    assert healthcheck is not None
    assert "/v2/health/live" in healthcheck.args
    assert ":8080" in healthcheck.args


def test_drift_target(stages: dict[str, Stage]) -> None:
    assert exec_form(effective(stages, "drift", "ENTRYPOINT")) == DRIFT_ENTRYPOINT
    assert effective(stages, "drift", "EXPOSE") is None


def test_pipeline_target(stages: dict[str, Stage]) -> None:
    # Kubeflow sets the command (python -m kfp.dsl.executor_main); an ENTRYPOINT would be prepended to it.
    assert effective(stages, "pipeline", "ENTRYPOINT") is None
    assert exec_form(effective(stages, "pipeline", "CMD")) == ["python"]


def test_entry_points_match_the_runtime_contract(stages: dict[str, Stage]) -> None:
    """docs/METRICS.md's image table and the Dockerfile agree."""
    text = (REPO / "docs" / "METRICS.md").read_text()
    section = text[text.index("## Runtime contract of the images") :]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].strip("`") in TARGETS:
            command = re.search(r"`(python [^`]+)`", cells[1])
            assert command, line
            table[cells[0].strip("`")] = (shlex.split(command.group(1)), cells[2])
    assert set(TARGETS) <= table.keys()
    serve_cmd = SERVE_ENTRYPOINT + SERVE_CMD
    contract, ports = table["serve"]
    assert serve_cmd[: len(contract)] == contract
    assert "8080" in ports
    assert "8081" in ports
    assert table["drift"][0] == DRIFT_ENTRYPOINT
    assert "kfp.dsl.executor_main" in " ".join(table["pipeline"][0])


def test_builder_copies_every_packaged_directory(stages: dict[str, Stage]) -> None:
    """Every package pyproject.toml ships is copied into the builder and let through .dockerignore."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    roots = {p.rstrip("*").rstrip(".") for p in find["include"]}
    copied = {i.args.split()[0].rstrip("/") for i in stages["builder"].all("COPY")}
    allowed = {
        line[1:].strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for root in roots:
        location = "src" if (REPO / "src" / root).is_dir() else root
        assert location in copied, f"{location} not copied into the builder"
        assert location in allowed, f"{location} excluded by .dockerignore"
    assert "pyproject.toml" in copied
    assert "pyproject.toml" in allowed


def test_dockerignore_is_an_allow_list() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is excluded first"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed.isdisjoint({"tests", ".venv", ".git", "helm", "manifests", "infra", "docs", "build", ".fraud"})
    assert "**/__pycache__" in rules


def test_chart_defaults_agree_with_the_image() -> None:
    values = yaml.safe_load((REPO / "helm" / "fraud-detection" / "values.yaml").read_text())
    assert values["model"]["name"] == SERVE_CMD[1]
    assert values["inferenceService"]["ports"] == {"http": 8080, "grpc": 8081}
    assert values["containerSecurityContext"]["runAsUser"] == 1000
    assert values["podSecurityContext"]["runAsUser"] == 1000
    for name in TARGETS:
        section = {"serve": "inferenceService", "drift": "drift", "pipeline": "pipeline"}[name]
        assert values[section]["image"]["repository"] == f"fraud-detection-{name}"


def test_chart_app_version_is_the_package_version() -> None:
    """The chart's default image tag (appVersion) is the version the images are built and tagged from."""
    chart = yaml.safe_load((REPO / "helm" / "fraud-detection" / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
