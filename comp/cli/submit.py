"""Submit commands: validate, submit, kernel, submissions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, command, examples, read_config
from comp.console import console


@command(
    help="Check a submission CSV against the sample submission; exit 1 when anything is wrong.",
    rich_help_panel="Submit",
    epilog=examples("comp validate submissions/exp1.csv", "comp validate submissions/blend1.csv -c my-comp"),
)
def validate(
    file: Annotated[Path, typer.Argument(help="The submission CSV to check.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.submission.validate import validate_with_config

    result = validate_with_config(file, read_config(config, set_))
    console.print(result)
    if not result.is_valid:
        raise typer.Exit(1)


@command(
    help="Validate FILE, submit it to Kaggle, record it in submissions/ledger.csv; --wait: the score.",
    rich_help_panel="Submit",
    epilog=examples(
        'comp submit submissions/exp1.csv -m "resnet18, 5 folds, tta"',
        'comp submit submissions/blend1.csv -m "blend of exp1 and exp2" --wait',
    ),
)
def submit(
    file: Annotated[Path | None, typer.Argument(help="The submission CSV (not with --kernel).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Description (Kaggle and ledger).")] = "",
    kernel: Annotated[
        str | None,
        typer.Option("--kernel", help="Code competition: submit this notebook's output (a kernel name or OWNER/SLUG)."),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="With --kernel: the notebook version (default: last push).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the public score and record it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Submit even if already submitted.")] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="With --wait: seconds before the first check.")
    ] = 10.0,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.kaggle.submit import submit_any

    cfg = read_config(config, set_)
    console.print(
        submit_any(
            cfg, file, message, kernel=kernel, version=version, force=force, wait=wait, poll_interval=poll_interval
        )
    )


@command(
    help="Package a run as an offline Kaggle notebook in kernels/<name>/; --rehearse it here, --push it.",
    rich_help_panel="Submit",
    epilog=examples("comp kernel exp1 --rehearse", "comp kernel blend1 --name blend1-v2 --push"),
)
def kernel(
    runs: Annotated[list[str] | None, typer.Argument(help="The run, trained or blended (default: name).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Folder under kernels/ (default: the run's name).")] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Kaggle account (default: from the credentials).")
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Run the notebook on a GPU.")] = False,
    wheels: Annotated[
        Path | None,
        typer.Option("--wheels", help="Folder of dependency wheels (default: ~/.cache/comp/wheels, filled by pip)."),
    ] = None,
    rehearse: Annotated[
        bool, typer.Option("--rehearse", help="Run the notebook here as Kaggle would, twice, before any upload.")
    ] = False,
    push: Annotated[
        bool, typer.Option("--push", help="Upload the dataset, push the notebook, follow its run.")
    ] = False,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=1, help="Seconds a rehearsal may run (Kaggle's limit: 9 hours).")
    ] = 9 * 3600.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="With --push: seconds between looks at Kaggle.")
    ] = 10.0,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.kernel import kernel as build_kernel

    cfg = read_config(config, set_)
    console.print(
        build_kernel(
            cfg,
            runs,
            name=name,
            owner=owner,
            gpu=gpu,
            wheels=wheels,
            rehearse_first=rehearse,
            push=push,
            time_limit=time_limit,
            poll_interval=poll_interval,
        )
    )


@command(
    help="The competition's recent Kaggle submissions and scores, beside the ledger's OOF scores.",
    rich_help_panel="Submit",
    epilog=examples("comp submissions", "comp submissions --limit 5 -c my-comp"),
)
def submissions(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many, newest first.")] = 20,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.kaggle.submissions import refresh_scores

    console.print(refresh_scores(read_config(config, set_).data.competition, limit=limit))
