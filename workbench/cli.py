"""The `wb` command line (Typer).

Commands only parse arguments, call the engine and print; every user mistake
arrives as a WorkbenchError, which `WorkbenchGroup` prints without a
traceback. `wb --help` and `wb list` must not import torch: the modules that
need it are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from workbench.errors import WorkbenchError

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class WorkbenchGroup(TyperGroup):
    """Turns a WorkbenchError from any command (plugin commands too) into a message and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        global _settings
        _settings = None  # read afresh for each command (tests run many in one process)
        try:
            return super().invoke(ctx)
        except WorkbenchError as exc:
            if not exc.every_rank or os.environ.get("RANK", "0") == "0":
                print_error(exc)
            raise typer.Exit(exc.exit_code) from None

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # in the order they were added, not alphabetical

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """`wb run E --resume` without a value means the latest run (Typer has no options with an optional value)."""
        name, command, rest = super().resolve_command(ctx, args)
        if name == "run":
            rest = list(rest)
            end = rest.index("--") if "--" in rest else len(rest)
            for i in range(end):
                if rest[i] == "--resume" and (i + 1 == end or rest[i + 1].startswith("-")):
                    rest[i] = f"--resume={LATEST}"
        return name, command, rest


def print_error(exc: WorkbenchError) -> None:
    style = "bold red" if exc.label == "error" else "bold yellow"
    message = Text(f"{exc.label}: ", style=style) + Text(exc.message)
    err.print(message, soft_wrap=True)
    if exc.hint:
        err.print(Text(exc.hint, style="yellow"), soft_wrap=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def settings() -> Any:
    """The workbench settings, read once per command (WB_* variables and the settings file)."""
    global _settings
    if _settings is None:
        from workbench.settings import load_settings

        _settings = load_settings()
    return _settings


_settings = None

FileOption = typer.Option(None, "--file", "-f", help="experiments file (default: WB_EXPERIMENTS or ./experiments.toml)")
SetOption = typer.Option(None, "--set", "-s", help="override a key: --set train.steps=200 (value is TOML)", metavar="KEY=VALUE")
JsonOption = typer.Option(False, "--json", help="print JSON for scripts")
LATEST = ":latest"  # what a bare --resume stands for


def show_version(value: bool) -> None:
    if value:
        from workbench import __version__

        typer.echo(f"wb (workbench) {__version__}")
        raise typer.Exit()


def main_options(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="print the version and exit"),
) -> None:
    """A workbench for denoising diffusion models: declare an experiment, train it, look at it, measure it."""


def make_app() -> typer.Typer:
    """The `wb` app with the built-in commands and those plugins add through `register_commands`."""
    app = typer.Typer(
        cls=WorkbenchGroup,
        name="wb",
        help="A workbench for denoising diffusion models: declare an experiment, train it, look at it, measure it.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(main_options)
    app.command("run")(run)
    app.command("show")(show)
    app.command("list")(list_components)
    app.command("plugins")(plugins)
    app.command("init")(init)
    app.command("sample")(sample)
    app.command("eval")(evaluate_run)
    app.command("runs")(list_runs)
    app.command("noise")(noise)
    app.command("check")(check)
    from workbench.registry import default_registry

    default_registry().pm.hook.register_commands(app=app)
    return app


# --- wb run / wb show --------------------------------------------------------------------


def run(
    experiment: str = typer.Argument(..., help="experiment name"),
    set_: Optional[list[str]] = SetOption,
    file: Optional[Path] = FileOption,
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N (default: WB_DEVICE or auto)"),
    resume: Optional[str] = typer.Option(
        None, "--resume", metavar="[RUN]",
        help="continue a run from its last checkpoint: the latest run of EXPERIMENT, or RUN (a run directory, "
        "EXPERIMENT/ID or ID); --set train.steps=N extends a finished one",
    ),
    nproc: int = typer.Option(1, "--nproc", min=1, help="processes per node (DistributedDataParallel; gloo on CPU, NCCL on CUDA)"),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="number of nodes (multi-node runs need --rdzv-endpoint)"),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="this node's rank among --nnodes"),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of the rendezvous, the same on every node"),
) -> None:
    """Train an experiment, sample from it and evaluate it."""
    from workbench import distributed, runs, training
    from workbench.experiment import load_experiment
    from workbench.pipeline import resolve_device

    resume_dir = None
    if resume is not None:  # the run's own stored experiment, with any --set on top (e.g. more train.steps)
        resume_dir = _resume_target(experiment, resume)
        exp = load_experiment(experiment, file=resume_dir / runs.EXPERIMENT, overrides=set_ or [])
        if not distributed.launched():  # said once, before any model is built (train() takes the lock itself)
            if _finished(resume_dir, exp):
                return
            holder = runs.lock_holder(resume_dir)
            if holder is not None:
                raise runs.busy(resume_dir, holder)
    else:
        exp = load_experiment(experiment, file=file, overrides=set_ or [])
        runs.check_runs_dir(settings().runs_dir, exp.name)

    if (nproc > 1 or nnodes > 1) and not distributed.launched():
        distributed.check_devices(resolve_device(device or settings().device), nproc)
        argv = ["run", experiment, *(f"--set={s}" for s in set_ or [])]
        argv += [f"--file={file}"] * (file is not None) + [f"--device={device}"] * (device is not None)
        argv += [f"--resume={resume_dir}"] * (resume_dir is not None)
        code = distributed.launch(argv, nproc, nnodes, node_rank, rdzv_endpoint)
        if code:
            raise typer.Exit(code)
        return
    training.train(exp, device=device, resume_dir=resume_dir, console=console, settings=settings())


def _resume_target(experiment: str, ref: str) -> Path:
    """The run `--resume [RUN]` continues: RUN, or the newest run of EXPERIMENT; never one of another experiment."""
    from workbench import runs

    runs_dir = settings().runs_dir
    run_dir = runs.latest_run_dir(runs_dir, experiment) if ref == LATEST else runs.find_run_dir(ref, runs_dir)
    stored = runs.stored_name(run_dir)
    if stored != experiment:
        raise WorkbenchError(
            f"{run_dir} is a run of '{stored}', not of '{experiment}'",
            hint=f"resume it with `wb run {stored} --resume {ref}`",
        )
    return run_dir


def _finished(run_dir: Path, exp: Any) -> bool:
    """Whether the run is done with the steps it is asked for; if so, say so (and how to extend it)."""
    from workbench import runs

    try:
        summary = runs.read_summary(run_dir)
    except runs.DamagedRun:
        return False  # resuming writes a new summary
    if summary.get("status") != "done" or summary.get("step", 0) < exp.train.steps:
        return False
    console.print(
        f"run {run_dir} is done: step {summary['step']} of {exp.train.steps}; nothing to resume", soft_wrap=True
    )
    console.print(
        f"to train it further: `wb run {exp.name} --resume{_ref(run_dir, exp.name)} --set train.steps={2 * summary['step']}`",
        soft_wrap=True, style="yellow",
    )
    return True


def _ref(run_dir: Path, experiment: str) -> str:
    """What follows --resume to name `run_dir`: nothing for the latest run, else EXPERIMENT/ID or the path."""
    from workbench import runs

    runs_dir = settings().runs_dir
    if run_dir.parent == runs_dir / experiment:
        return "" if runs.run_dirs(runs_dir, experiment)[-1:] == [run_dir] else f" {experiment}/{run_dir.name}"
    return f" {run_dir}"


def show(
    experiment: str = typer.Argument(..., help="experiment name"),
    set_: Optional[list[str]] = SetOption,
    file: Optional[Path] = FileOption,
) -> None:
    """Print the fully resolved experiment as TOML (extends, --set and defaults applied)."""
    from workbench.experiment import load_experiment

    exp = load_experiment(experiment, file=file, overrides=set_ or [])
    typer.echo(f"# {exp.source}: experiment '{exp.name}', resolved")
    shape = exp.dataset.shape
    count = exp.backbone.parameter_count(shape, exp.loss.out_channels(shape[0], exp.diffusion.variance))
    typer.echo(f"# backbone parameters: {count:,}")
    typer.echo(exp.to_toml(), nl=False)


# --- wb list / wb plugins ------------------------------------------------------------------


def list_components(
    kind: Optional[str] = typer.Argument(None, help="a kind: datasets, schedulers, backbones, losses, samplers, metrics"),
    name: Optional[str] = typer.Argument(None, help="one component: show its options"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show every option with its type, default and description"),
    as_json: bool = JsonOption,
) -> None:
    """List the registered components, with the plugin that provided each."""
    from workbench.registry import default_registry

    registry = default_registry()
    entries = registry.entries(kind) if kind else registry.entries()
    if name is not None:
        if kind is None:
            raise WorkbenchError("give a kind before the name, e.g. `wb list scheduler cosine`")
        entries = [registry.get(kind, name)]
        verbose = True
    if as_json:
        print_json([_entry_json(e, verbose) for e in entries])
        return
    table = Table(title="Registered components", title_justify="left")
    for column in ("kind", "name", "plugin", "distribution"):
        table.add_column(column, no_wrap=True)
    table.add_column("summary", overflow="fold")
    previous_kind = None
    for e in entries:
        if previous_kind is not None and e.kind != previous_kind:
            table.add_section()
        shown_kind = e.kind if e.kind != previous_kind else ""
        dist = f"{e.provider.distribution} {e.provider.version}" if e.provider.distribution else "-"
        table.add_row(shown_kind, e.name, e.provider.plugin, dist, e.cls.summary())
        previous_kind = e.kind
    if not entries:
        console.print(f"no {registry.kind(kind) if kind else ''} components are registered")
        return
    if not verbose:
        console.print(table)
        return
    for e in entries:
        console.print(_options_table(e))


def _options_table(entry: Any) -> Table:
    table = Table(
        title=f"{entry.kind} [bold]{entry.name}[/] — {entry.cls.summary()}  (from {entry.provider})",
        title_justify="left",
    )
    for column in ("option", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for opt in entry.cls.options():
        default = "(required)" if opt.required else repr(opt.default)
        table.add_row(opt.name, opt.type, default, opt.description)
    return table


def _entry_json(entry: Any, verbose: bool) -> dict[str, Any]:
    data = {
        "kind": entry.kind,
        "name": entry.name,
        "plugin": entry.provider.plugin,
        "distribution": entry.provider.distribution,
        "version": entry.provider.version,
        "summary": entry.cls.summary(),
    }
    if verbose:
        data["options"] = [
            {"name": o.name, "type": o.type, "default": o.default, "required": o.required, "description": o.description}
            for o in entry.cls.options()
        ]
    return data


def plugins(as_json: bool = JsonOption) -> None:
    """List the loaded plugins: distribution, version, hooks, and any load error."""
    from workbench.registry import default_registry

    infos = default_registry().plugins
    if as_json:
        print_json([vars(p) for p in infos])
        return
    table = Table(title="Plugins", title_justify="left")
    for column in ("plugin", "distribution", "version", "hooks", "status"):
        table.add_column(column, overflow="fold")
    for p in sorted(infos, key=lambda p: p.name):
        status = Text("ok", style="green") if p.error is None else Text(f"error: {p.error}", style="red")
        table.add_row(p.name, p.distribution or "-", p.version or "-", ", ".join(p.hooks) or "-", status)
    console.print(table)


# --- wb init ---------------------------------------------------------------------------------


def init(
    path: Path = typer.Argument(Path("experiments.toml"), help="where to write the starter file"),
) -> None:
    """Write a starter experiments.toml (never overwrites an existing file)."""
    from importlib import resources

    if path.exists():
        raise WorkbenchError(f"{path} already exists; not overwriting it", hint="pass another path: `wb init my.toml`")
    starter = resources.files("workbench").joinpath("starter_experiments.toml").read_text(encoding="utf-8")
    path.write_text(starter, encoding="utf-8")
    console.print(f"wrote {path}: try `wb show exp1` and `wb run exp1`")


# --- wb sample / wb eval / wb runs ------------------------------------------------------------

RunArgument = typer.Argument(..., help="a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run)")
DeviceOption = typer.Option(None, help="auto, cpu, cuda or cuda:N (default: WB_DEVICE or auto)")


def _find_run(ref: str) -> Any:
    from workbench.handle import find_run

    return find_run(ref, settings().runs_dir)


def _device(device: str | None) -> Any:
    from workbench.pipeline import resolve_device

    return resolve_device(device or settings().device)


def sample(
    run_ref: str = RunArgument,
    n: int = typer.Option(64, "-n", min=1, help="number of samples"),
    sampler: Optional[str] = typer.Option(None, help="a registered sampler (default: the experiment's)"),
    steps: Optional[int] = typer.Option(None, min=1, help="sampler steps (model evaluations)"),
    seed: int = typer.Option(0, help="seed of the sampler's generator"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="other sampler option, e.g. -o eta=1.0", metavar="KEY=VALUE"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: in the run directory)"),
    npz: bool = typer.Option(False, "--npz", help="also write the raw samples as .npz beside the PNG"),
    device: Optional[str] = DeviceOption,
    class_: Optional[str] = typer.Option(
        None, "--class", help="conditional runs: the class to draw (index or name), or 'all' for -n of each, one row each"
    ),
    guidance: Optional[str] = typer.Option(
        None, "--guidance", help="conditional runs: guidance scale(s) s, e.g. 2 or 0,1,2,4 (one panel each, same noise)"
    ),
) -> None:
    """Draw samples from a run's EMA model with any sampler; show them and write a PNG."""
    import time

    from workbench.display import save_samples, terminal_samples
    from workbench.toml_io import parse_options

    if out is not None:
        _check_out(out)
    run = _find_run(run_ref)
    options = parse_options(option or [], "--option", "eta=1.0")
    if steps is not None:
        options["steps"] = steps
    if class_ is not None or guidance is not None:
        _sample_classes(run, n, class_, guidance, sampler, seed, steps, out, npz, _device(device), options)
        return
    start = time.perf_counter()
    samples = run.sample(n, sampler=sampler, seed=seed, device=_device(device), **options)
    seconds = time.perf_counter() - start
    name = sampler or run.experiment.sampler.name
    path = out or _unused(run.dir / f"samples-{name}{f'-{steps}' if steps else ''}-seed{seed}.png")
    save_samples(samples, path)
    if npz:
        import numpy as np

        np.savez_compressed(path.with_suffix(".npz"), samples=samples.cpu().numpy())
    console.print(terminal_samples(samples))
    console.print(f"{n} samples with {name} in {seconds:.1f} s -> {path}", soft_wrap=True)


def _sample_classes(run, n, class_, guidance, sampler, seed, steps, out, npz, device, options) -> None:
    """`wb sample --class K|NAME|all --guidance S[,S...]`: one labelled row per class, one panel per scale."""
    import time

    from workbench.class_sheet import class_sheet, class_title, side_by_side
    from workbench.display import terminal_samples
    from workbench.guidance import parse_scales

    scales = parse_scales(guidance)
    start = time.perf_counter()
    drawn, labels = run.sample_classes(n, class_ or "all", scales, sampler=sampler, seed=seed, device=device, **options)
    seconds = time.perf_counter() - start
    names = run.experiment.dataset.class_names
    sheets = [(f"guidance {s:g}", class_sheet(x, labels, names)) for s, x in drawn]
    name = sampler or run.experiment.sampler.name
    which = "all" if class_ in (None, "all") else str(int(labels[0]))
    scale_text = "-".join(f"{s:g}" for s, _ in drawn)
    path = out or _unused(run.dir / f"samples-{name}{f'-{steps}' if steps else ''}-class{which}-g{scale_text}-seed{seed}.png")
    (side_by_side(sheets) if len(sheets) > 1 else sheets[0][1]).save(path)
    if npz:
        import numpy as np

        np.savez_compressed(
            path.with_suffix(".npz"), labels=labels.numpy(), guidance=np.array([s for s, _ in drawn]),
            **{f"samples_{i}": x.cpu().numpy() for i, (_, x) in enumerate(drawn)},
        )
    for s, x in drawn:
        console.print(f"[bold]guidance {s:g}[/bold]")
        if x.ndim > 2:
            for k in sorted(set(labels.tolist())):
                console.print(class_title(k, names))
                console.print(terminal_samples(x[labels == k]))
        else:
            console.print(terminal_samples(x))
    console.print(f"{len(labels)} samples per scale with {name} in {seconds:.1f} s -> {path}", soft_wrap=True)


def _check_out(out: Path) -> None:
    """--out is a .png in a folder that exists and can be written: checked before any sampling."""
    if out.suffix.lower() != ".png":
        raise WorkbenchError(f"--out {out}: the picture is a PNG, so its name must end in .png", hint=f"e.g. --out {out.with_suffix('.png')}")
    folder = out.parent
    if not folder.is_dir():
        raise WorkbenchError(f"--out {out}: the folder {folder} does not exist", hint=f"create it first: mkdir -p {folder}")
    if not os.access(folder, os.W_OK):
        raise WorkbenchError(f"--out {out}: the folder {folder} cannot be written")
    if out.is_dir():
        raise WorkbenchError(f"--out {out} is a folder; give a file name ending in .png")


def _unused(path: Path) -> Path:
    """`path`, or path-1, path-2, ... if it exists: sampling never overwrites an earlier picture."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def evaluate_run(
    run_ref: str = RunArgument,
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="metric to compute (repeat; default: the experiment's)"),
    samples: Optional[int] = typer.Option(None, min=1, help="samples to draw for sample-quality metrics"),
    sampler: Optional[str] = typer.Option(None, help="sampler for the samples (default: the experiment's)"),
    steps: Optional[int] = typer.Option(None, min=1, help="the sampler's steps (model evaluations)"),
    device: Optional[str] = DeviceOption,
) -> None:
    """Evaluate a run's EMA model and add the results to its summary (keyed by sampler and options when they differ)."""
    from workbench.console import ConsoleListener
    from workbench.events import Events
    from workbench.report import evaluate_run

    run = _find_run(run_ref)
    computed, results = evaluate_run(
        run, metric or [], sampler=sampler, sampler_options={"steps": steps} if steps else None,
        num_samples=samples, device=_device(device),
        events=Events([ConsoleListener(console)]), cache_dir=settings().cache_dir,
    )
    table = Table(title=f"{run.dir.parent.name} · {run.dir.name}", title_justify="left")
    for column in ("metric", "value", "better"):
        table.add_column(column)
    for m, (key, value) in zip(computed, results.items()):
        table.add_row(key, f"{value:.4f}", "higher" if m.higher_is_better else "lower")
    console.print(table)


def list_runs(
    experiment: Optional[str] = typer.Argument(None, help="only this experiment's runs"),
    compare: Optional[list[str]] = typer.Option(None, "--compare", help="two runs: the options that differ and the metrics side by side"),
    as_json: bool = JsonOption,
) -> None:
    """List runs with their status, options and final metrics, or compare two."""
    from workbench import runs

    runs_dir = settings().runs_dir
    if compare:
        if len(compare) != 2:
            raise WorkbenchError("--compare takes two runs: --compare RUN_A --compare RUN_B")
        a, b = (runs.find_run_dir(ref, runs_dir) for ref in compare)
        diff = runs.compare(a, b)
        if as_json:
            print_json(diff)
            return
        table = Table(title=f"A: {a}\nB: {b}", title_justify="left")
        for column in ("", "A", "B"):
            table.add_column(column, overflow="fold")
        for key, (va, vb) in diff["options"].items():
            table.add_row(key, _show(va), _show(vb))
        table.add_section()
        for key, (va, vb) in diff["metrics"].items():
            table.add_row(key, _show(va), _show(vb))
        console.print(table)
        return
    rows = [runs.describe(d) for d in runs.run_dirs(runs_dir, experiment)] if experiment is None or _listed(experiment) else []
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no runs under {runs_dir}" + (f" for '{experiment}'" if experiment else ""))
        return
    table = Table(title="Runs", title_justify="left")
    for column in ("experiment", "id", "status", "steps", "time", "options", "metrics"):
        table.add_column(column, overflow="fold")
    for r in rows:
        if r["status"] == "damaged":
            table.add_row(r["experiment"], r["id"], _status("damaged"), "-", "-", r["reason"], "")
            continue
        metrics = "  ".join(f"{k} {v:.4g}" for k, v in r["metrics"].items())
        status = _status(r["status"]) + (Text(f" ({r['reason']})", style="dim") if r["reason"] and r["status"] != "failed" else "")
        if r["status"] == "failed" and r["reason"]:
            metrics = r["reason"]
        table.add_row(r["experiment"], r["id"], status, f"{r['step']}/{r['steps']}", f"{r['wall_time']:.0f}s", r["options"], metrics)
    console.print(table)


def _listed(experiment: str) -> bool:
    """`wb runs NAME`: NAME must be an experiment name (it becomes a folder under the runs directory)."""
    from workbench.experiment_file import check_name

    check_name(experiment, "wb runs")
    return True


def _show(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _status(status: str) -> Text:
    colour = {"done": "green", "running": "blue", "interrupted": "yellow", "failed": "red", "damaged": "red"}.get(status, "white")
    return Text(status, style=colour)


def noise(
    experiments: list[str] = typer.Argument(..., help="one or more experiments (e.g. exp1_linear exp1, to compare schedules)"),
    steps: int = typer.Option(8, min=2, help="how many t to show, evenly spaced from 0 to T-1"),
    n: int = typer.Option(8, "-n", min=1, help="images per column (2-D sets: all points are drawn)"),
    set_: Optional[list[str]] = SetOption,
    file: Optional[Path] = FileOption,
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: RUNS_DIR/noise/noise-EXP[-EXP...].png)"),
) -> None:
    """Show the forward process without training: data noised at several t, per experiment."""
    from rich.columns import Columns

    from workbench import plots
    from workbench.display import TerminalImage, TerminalScatter
    from workbench.experiment import load_experiment
    from workbench.pipeline import noised_examples

    rows = []
    for name in experiments:
        exp = load_experiment(name, file=file, overrides=set_ or [])
        shown, pictures = noised_examples(exp, steps, n)
        label = f"{name}: {exp.scheduler.name} schedule, T = {exp.scheduler.timesteps}"
        rows.append((label, plots.panels(pictures)))
        console.print(f"[bold]{label}[/]  (columns: t = {', '.join(map(str, shown))})")
        if len(exp.dataset.shape) == 3:
            console.print(TerminalImage(plots.image_columns(pictures, exp.dataset.shape), nrow=len(shown)))
        else:
            console.print(Columns([TerminalScatter(x / 3, height=6) for _, x in pictures]))
    path = out or settings().runs_dir / "noise" / f"noise-{'-'.join(experiments)}.png"  # not the working folder
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.save_rows(rows, path)
    console.print(f"written to {path}", soft_wrap=True)


# --- wb check ---------------------------------------------------------------------------------


def check(
    kind: str = typer.Argument(..., help="scheduler, sampler, backbone, loss, dataset or metric"),
    name: str = typer.Argument(..., help="the component's name (or provider:name), built-in or a plugin's"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="an option of the component: --set steps=20 (value is TOML)", metavar="OPTION=VALUE"),
    nfe: Optional[str] = typer.Option(
        None, "--nfe", metavar="STEPS,...",
        help="samplers with a steps option: also a table of distance against model evaluations at these steps (e.g. 5,10,20,50)",
    ),
    picture: Optional[Path] = typer.Option(None, "--picture", help="schedulers: also write a PNG of points noised at 8 t (like `wb noise`)"),
    as_json: bool = JsonOption,
) -> None:
    """Check a component's contract and mathematics against ground truth (exact denoisers, closed forms)."""
    from workbench.registry import default_registry
    from workbench.testing import check_named, nfe_table_named

    results = check_named(default_registry(), kind, name, set_ or [])
    failed = [r.check for r in results if not r.passed]
    table_rows = None
    if nfe is not None:
        try:
            steps = [int(part) for part in nfe.split(",") if part.strip()]
        except ValueError:
            raise WorkbenchError(f"--nfe {nfe!r}: expected step counts separated by commas, e.g. 5,10,20") from None
        table_rows = nfe_table_named(default_registry(), name, set_ or [], steps)
    if as_json:
        checks = [r.as_dict() for r in results]
        print_json(checks if table_rows is None else {"checks": checks, "nfe": table_rows})
    else:
        table = Table(title=f"wb check {kind} {name}", title_justify="left")
        for column in ("check", "figure", "limit"):
            table.add_column(column, overflow="fold")
        table.add_column("verdict", no_wrap=True)
        styles = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        for r in results:
            table.add_row(r.check, r.figure, r.limit, Text(r.verdict, style=styles[r.verdict]))
        console.print(table)
        if not results:
            console.print(f"no checks for kind '{kind}' yet")
        if table_rows is not None:
            nfe_table = Table(title=f"{name}: distance to the exact chain's output (8 narrow modes) by model evaluations",
                              title_justify="left")
            for column in ("steps", "evaluations", "sliced W", "x floor"):
                nfe_table.add_column(column, justify="right")
            for row in table_rows:
                nfe_table.add_row(str(row["steps"]), str(row["evaluations"]), f"{row['sw']:.4f}", f"{row['floor_multiple']:.2f}")
            console.print(nfe_table)
    if picture is not None:
        from workbench.testing import picture_named

        if default_registry().kind(kind) != "scheduler":
            raise WorkbenchError("--picture is for schedulers", hint=f"wb check scheduler NAME --picture {picture}")
        err.print(f"written to {picture_named(default_registry(), name, set_ or [], picture)}", soft_wrap=True)
    if failed:
        raise WorkbenchError(f"{len(failed)} check(s) failed: " + "; ".join(failed))


def main() -> None:
    """Console-script entry point."""
    try:
        app = make_app()
    except WorkbenchError as exc:  # e.g. a bad WB_* setting or a strict plugin failure
        print_error(exc)
        raise SystemExit(exc.exit_code) from None
    app()


if __name__ == "__main__":
    main()
