"""`comp kernel`: a run packaged as an offline Kaggle notebook, rehearsed here, pushed and followed on Kaggle.

package.py builds kernels/<name>/ (dataset folder + notebook), notebook.py writes the notebook's
cells, wheels.py gathers the wheels it installs offline, sandbox.py and rehearse.py run it as
Kaggle would; the Kaggle calls are comp/kaggle/kernels.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text

from comp.config import Config
from comp.kaggle.client import check_slug
from comp.kaggle.credentials import require_credentials
from comp.kaggle.kernels import POLL_INTERVAL, PushResult, push_kernel
from comp.kernel.package import DATASET_LIMIT, KernelBuild, create_kernel
from comp.kernel.rehearse import TIME_LIMIT, Rehearsal, rehearse


@dataclass
class KernelResult:
    build: KernelBuild
    rehearsal: Rehearsal | None
    push: PushResult | None

    def __rich__(self) -> Group:
        parts: list = [self.build]
        if self.rehearsal is not None:
            parts.append(self.rehearsal)
        if self.push is not None:
            if self.rehearsal is None:
                parts.append(Text("note: pushed without a rehearsal (--rehearse runs it here first)", style="yellow"))
            parts.append(self.push)
        return Group(*parts)


def kernel(
    config: Config,
    runs: list[str] | None = None,
    *,
    name: str | None = None,
    owner: str | None = None,
    gpu: bool = False,
    wheels: Path | None = None,
    rehearse_first: bool = False,
    push: bool = False,
    time_limit: float = TIME_LIMIT,
    max_bytes: int = DATASET_LIMIT,
    poll_interval: float = POLL_INTERVAL,
) -> KernelResult:
    """Build the kernel; then, as asked, rehearse it (a failure stops before any upload) and push it."""
    if push:  # before anything is built: a missing key says where to put it, the demo is refused
        require_credentials()
        check_slug(config.data.competition)
    build = create_kernel(config, runs, name=name, owner=owner, gpu=gpu, wheels=wheels, max_bytes=max_bytes)
    rehearsal = rehearse(build.folder, config, time_limit) if rehearse_first else None
    pushed = push_kernel(build.folder, poll_interval=poll_interval) if push else None
    return KernelResult(build, rehearsal, pushed)
