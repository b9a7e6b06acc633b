"""The lab's life cycle: converge (up, harden, verify) and rebuild (destroy, up, harden, verify).

``mlseclab up``, ``mlseclab rebuild`` and ``mlseclab drift --fix`` run these sequences;
they are written once, here, against the :class:`~mlseclab.targets.Target` protocol.
The cores of ``harden`` and ``verify`` live here too: both read only what ``up``
recorded (the inventory and the role variables in state.json) and write nothing but
their run artifacts and reports.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from mlseclab import posture, process, ui
from mlseclab.context import Context, chosen_nodes
from mlseclab.errors import LabError
from mlseclab.harden import HardenResult, TaskResult, role_vars, run_playbook
from mlseclab.posture.report import FRAMEWORK_NAMES, new_report_dir, score, write_reports
from mlseclab.posture.results import FAILING, Outcome
from mlseclab.posture.runner import PostureRun, ScopeRun, run_posture
from mlseclab.spec import Role
from mlseclab.targets import Target, open_target


def target_of(ctx: Context) -> Target:
    """The target the lab runs on (``ctx.target``: what up recorded)."""
    return open_target(ctx.spec, ctx.spec_path, ctx.topology, ctx.home, ctx.target)


# -- harden --------------------------------------------------------------------------
def _show(check: bool) -> Callable[[TaskResult], None]:
    def on_result(r: TaskResult) -> None:
        if r.status == "changed":
            verb = "would change" if check else "changed"
            ui.info(f"  [yellow]~[/] {ui.esc(r.host)}: {ui.esc(r.task)} [dim]({verb})[/]")
        elif r.status in ("failed", "unreachable"):
            first = r.message.splitlines()[0] if r.message else r.status
            ui.info(f"  [red]✗[/] {ui.esc(r.host)}: {ui.esc(r.task)}: {ui.esc(first)}")

    return on_result


def summary_table(result: HardenResult, check: bool) -> Table:
    title = f"{'check' if check else 'harden'}: run {result.ident} ({result.seconds:.0f}s)"
    table = Table(title=ui.esc(title), title_justify="left")
    for col in (
        "node",
        "ok",
        "would change" if check else "changed",
        "failed",
        "unreachable",
        "skipped",
    ):
        table.add_column(col, justify="left" if col == "node" else "right")
    for host, s in sorted(result.hosts.items()):
        table.add_row(
            ui.esc(host),
            str(s.ok),
            f"[yellow]{s.changed}[/]" if s.changed else "0",
            f"[red]{s.failed}[/]" if s.failed else "0",
            f"[red]{s.unreachable}[/]" if s.unreachable else "0",
            str(s.skipped),
        )
    return table


def harden_lab(
    ctx: Context,
    *,
    quiet: bool = False,
    check: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
) -> HardenResult:
    with ctx.home.lock("harden"):
        extravars = role_vars(ctx.home)  # what up provisioned; harden writes none of it
        lab = ui.esc(ctx.spec.lab.name)
        ui.info(f"harden: lab [bold]{lab}[/]{' (check mode)' if check else ''}")
        result = run_playbook(
            ctx.home,
            check=check,
            limit=limit,
            tags=tags,
            skip_tags=skip_tags,
            extravars=extravars,
            on_result=_show(check),
        )
    if not quiet:  # --json prints the summary instead
        ui.out.print(summary_table(result, check))
    ui.plain(f"events: {result.artifacts}")
    if result.failed:
        bad = sum(1 for h in result.hosts.values() if h.failed or h.unreachable)
        if bad:
            ui.error(
                f"harden failed on {bad} node(s); the lines above and the run's events "
                "name the task"
            )
        else:
            ui.error(f"the playbook failed before any node did: {result.playbook_error()}")
    return result


# -- verify --------------------------------------------------------------------------
def posture_control_ids() -> set[str]:
    """The lab control ids the posture suite's checks carry."""
    return posture.controls()


def check_waivers(ctx: Context) -> None:
    """A waiver must name a control some check carries (:func:`mlseclab.posture.check_waivers`)."""
    posture.check_waivers(ctx.spec, ctx.spec_path)
    for problem in posture.expired_waivers(ctx.spec, ctx.spec_path):
        ui.warn(str(problem))


def _framework_line(fw: str, ids: dict[str, Counter[Outcome]]) -> str:
    total: Counter[Outcome] = Counter()
    for c in ids.values():
        total.update(c)
    bad = [cid for cid, c in ids.items() if any(c[o] for o in FAILING)]
    if len(ids) <= 12:
        parts = [f"{cid} {score(c)}" for cid, c in ids.items()]
        body = " · ".join(parts)
    else:
        body = f"{len(ids)} controls, checks {score(total)}"
        if bad:
            body += f"; failing: {', '.join(bad)}"
    return f"{FRAMEWORK_NAMES.get(fw, fw)}: {body}"


def print_summary(run: PostureRun, roles: dict[str, str]) -> None:
    table = Table(title=ui.esc(f"verify: lab {run.lab} ({run.seconds:.0f}s)"), title_justify="left")
    for col in ("node", "role", "passed", "failed", "waived", "n/a"):
        table.add_column(col, justify="left" if col in ("node", "role") else "right")
    for node, c in run.by_node().items():
        bad = sum(c[o] for o in FAILING)
        table.add_row(
            ui.esc(node),
            ui.esc(roles.get(node, "lab")),
            score(c).split(" ")[0],
            f"[red]{bad}[/]" if bad else "0",
            str(c[Outcome.WAIVED]),
            str(c[Outcome.NOT_APPLICABLE]),
        )
    ui.out.print(table)
    for fw, ids in run.by_framework().items():
        ui.plain("  " + _framework_line(fw, ids))
    for r in (r for r in run.results if r.failing):
        lab_ids = ", ".join(r.lab_controls)
        first = (r.evidence.strip().splitlines() or [str(r.outcome)])[0][:200]
        line = f"{r.node}: {lab_ids} {r.title}: {first}"
        ui.info(f"  [red]✗[/] {ui.esc(line)}")
    for s in run.broken_scopes:
        tail = s.output.strip().splitlines()[-3:] or ["no output"]
        ui.info(
            f"  [red]✗[/] {ui.esc(s.scope)}: the checks did not run (exit {s.returncode}): "
            f"{ui.esc(tail[-1])}"
        )


def verify_lab(
    ctx: Context,
    nodes: Sequence[str] | None = None,
    *,
    reports: Path | None = None,
    extra: Sequence[str] = (),
) -> tuple[PostureRun, Path]:
    """Run the posture suite on ``nodes`` (all when none), print the summary, write reports."""
    if not ctx.home.ssh_config.exists():
        raise LabError(
            f"lab {ctx.spec.lab.name} is not up (no {ctx.home.ssh_config}): run `mlseclab up` first"
        )
    chosen = chosen_nodes(ctx, list(nodes or []))
    check_waivers(ctx)
    ctx.home.ensure_control_dir()  # a reboot empties the temp dir the sockets live in
    lab = ui.esc(ctx.spec.lab.name)
    ui.info(f"verify: {len(chosen)} node(s) of lab [bold]{lab}[/], in parallel")

    def done(s: ScopeRun) -> None:
        bad = sum(s.counts[o] for o in FAILING)
        mark = "[green]✓[/]" if not bad and s.results else "[red]✗[/]"
        ui.info(
            f"  {mark} {ui.esc(s.scope)}: {len(s.results)} checks, {bad} failed ({s.seconds:.1f}s)"
        )

    run = run_posture(
        lab=ctx.spec.lab.name,
        spec_path=ctx.spec_path.resolve(),
        state=ctx.home.root.resolve(),
        nodes=chosen,
        include_lab_scope=not nodes,
        extra=extra,
        on_scope_done=done,
    )
    directory = new_report_dir(ctx.spec.lab.name, reports)
    paths = write_reports(run, directory)
    print_summary(run, {n: node.role for n, node in ctx.spec.nodes.items()})
    verdict = "[green]all checks pass[/]" if run.passed else "[red]findings[/]"
    names = ", ".join(p.name for p in paths.values())
    ui.info(f"verify: {verdict}; reports in {ui.esc(directory)}/ ({ui.esc(names)})")
    return run, directory


# -- the sequences ----------------------------------------------------------------------
@dataclass(frozen=True)
class Converged:
    """What a converge did: the harden run (None: not hardened) and the verify run (None:
    not verified, or stopped before it)."""

    hardened: HardenResult | None = None
    run: PostureRun | None = None

    @property
    def broken(self) -> set[str]:
        """Nodes the harden run failed or could not reach."""
        if self.hardened is None:
            return set()
        return {h for h, s in self.hardened.hosts.items() if s.failed or s.unreachable}


def converge(
    ctx: Context,
    target: Target,
    *,
    harden: bool = True,
    verify: bool = True,
    limit: Sequence[str] | None = None,
    verify_nodes: Sequence[str] | None = None,
    keep_going: bool = False,
    after_up: Callable[[], None] | None = None,
    after_harden: Callable[[], None] | None = None,
) -> Converged:
    """up, then harden (``limit``: only these nodes), then verify ``verify_nodes`` (all
    when None). A failed harden ends it, unless ``keep_going`` and some node failed (not
    the playbook itself): then verify runs anyway, so the caller can rebuild those nodes.
    ``after_up`` and ``after_harden`` run after each step succeeded (to report it)."""
    target.up()
    if after_up is not None:
        after_up()
    hardened = None
    if harden:
        hardened = harden_lab(ctx, limit=",".join(limit) if limit else None)
        if hardened.failed:
            done = Converged(hardened)
            if not (keep_going and done.broken):
                return done
        elif after_harden is not None:
            after_harden()
    if not verify:
        return Converged(hardened)
    if hardened is not None and not hardened.failed:
        wait_for_log_shipping(ctx, limit)
    run, _ = verify_lab(ctx, verify_nodes)
    return Converged(hardened, run)


#: the state journal upload saves once the receiver has taken its first entries
_SHIPPED = (
    "for i in $(seq 1 {seconds}); do sudo -n grep -qs '^LAST_CURSOR=' "
    "/var/lib/systemd/journal-upload/state && exit 0; sleep 1; done; exit 1"
)


def wait_for_log_shipping(
    ctx: Context, nodes: Sequence[str] | None, seconds: int = 90
) -> list[str]:
    """Wait until each node's journal upload has shipped once to the observability node
    (a node just made or rebuilt uploads after harden enables it, and its first connection
    can take a while); the nodes still not shipping, for verify to report."""
    names = [
        n for n in (nodes or ctx.spec.nodes) if ctx.spec.nodes[n].role is not Role.OBSERVABILITY
    ]
    if not names or not any(n.role is Role.OBSERVABILITY for n in ctx.spec.nodes.values()):
        return []
    cmd = _SHIPPED.format(seconds=int(seconds))

    def shipped(node: str) -> bool:
        try:
            done = process.ssh(ctx.home.ssh_config, node, cmd, timeout=seconds + 30)
        except LabError:
            return False
        return done.returncode == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(names, pool.map(shipped, names), strict=True))
    late = sorted(n for n, ok in results.items() if not ok)
    if late:
        ui.warn(f"journal upload has not shipped yet from {', '.join(late)} (verify will say)")
    return late


def rebuild(
    ctx: Context,
    target: Target,
    nodes: Sequence[str],
    *,
    verify_nodes: Sequence[str] | None,
    harden: bool = True,
    after_up: Callable[[], None] | None = None,
    after_harden: Callable[[], None] | None = None,
) -> Converged:
    """Destroy ``nodes`` (datasets kept), re-create them (up), harden only them, verify
    ``verify_nodes`` (all when None)."""
    target.destroy_nodes(nodes)
    return converge(
        ctx,
        target,
        harden=harden,
        verify=harden,
        limit=nodes,
        verify_nodes=verify_nodes,
        after_up=after_up,
        after_harden=after_harden,
    )
