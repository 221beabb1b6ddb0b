"""No sandbox: runs commands directly on this machine, as the worker's own user. For debugging only.

Same interface and the same output cap, rlimits, per-run cgroup, timeout, cancel and process-tree kill
as bwrap (process.py, cgroup.py), but nothing else: no namespaces and no seccomp filter, so the command
can read and write whatever the worker can, trace the worker's other processes and reach the whole
network (`network=True` is checked like elsewhere, but no proxy filters anything), and where cgroups
are not available a daemon that left its process group with setsid and whose parent has exited can
outlive the run. It refuses to start unless constructed with debug=True.

Toolchains are put on PATH at their host folders. Services start beside each command the same way
(agents/services.py), but on the host's own loopback, where they may clash with servers already there,
and PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agents.recipe import Services
from agents.sandbox import cgroup
from agents.sandbox.base import DEFAULT_LIMITS, INSIDE_WORKSPACE, CommandResult, Sandbox, SandboxError, SandboxLimits
from agents.sandbox.process import prlimit_argv, run_process
from agents.services import NO_SERVICES, wrap
from agents.toolchains import Toolchain


class NoneSandbox(Sandbox):
    name = "none"

    def __init__(
        self,
        workspace: Path,
        *,
        limits: SandboxLimits = DEFAULT_LIMITS,
        ro_binds: Sequence[Path] = (),
        debug: bool = False,
        egress_hosts: Sequence[str] = (),
        egress_networks: Sequence[str] = (),
        owned: bool = False,
        services: Services = NO_SERVICES,
        services_dir: Path | None = None,
        toolchains: Sequence[Toolchain] = (),
    ) -> None:
        if not debug:
            raise SandboxError(
                "The 'none' sandbox runs commands directly on this machine with no protection, so it is "
                "only allowed in debug mode. Use the 'bwrap' sandbox."
            )
        super().__init__(
            workspace, limits=limits, ro_binds=ro_binds, debug=debug, egress_hosts=egress_hosts,
            egress_networks=egress_networks, owned=owned, services=services, services_dir=services_dir,
            toolchains=toolchains,
        )  # fmt: skip
        self.owner = None
        self._prepare_services(None)
        self._prlimit = shutil.which("prlimit")
        if not self._prlimit:
            raise SandboxError("prlimit is missing, so command limits cannot be set: apt-get install util-linux.")
        # A private HOME, so commands don't read or litter the worker's own.
        self._home = tempfile.mkdtemp(prefix="sandbox-home-")
        weakref.finalize(self, shutil.rmtree, self._home, ignore_errors=True)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str = "/workspace",
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        cancel: Callable[[], bool] | None = None,
    ) -> CommandResult:
        self._check_network(network)
        argv = self._check_argv(argv)
        inside = self._inside_cwd(cwd)
        host_cwd = self.workspace.joinpath(*inside.relative_to(INSIDE_WORKSPACE).parts)
        if self.services_dir is not None:
            argv = wrap(self.servers, argv, str(self.services_dir))
        group = cgroup.create(self.limits)
        try:
            launcher = [self._prlimit, *prlimit_argv(self.limits, group.enforced if group else frozenset())[1:], *argv]
            if group:
                launcher = group.join_argv(launcher)
            result = run_process(
                launcher,
                env=self._command_env(env, home=self._home),
                cwd=str(host_cwd),
                timeout=timeout,
                output_bytes=self.limits.output_bytes,
                cancel=cancel,
            )
            if group:
                group.kill()
                result = cgroup.explain(result, group, self.limits)
            return result
        finally:
            if group:
                group.close()

    def _toolchain_bin(self, toolchain: Toolchain) -> str:
        return str(toolchain.host / "bin")
