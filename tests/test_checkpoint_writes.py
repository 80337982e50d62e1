"""Checkpoints written on a thread while training goes on: what is written is the state when it was taken, the
writes keep their order, and a failed one is not lost; a file that cannot be written is named."""

import threading

import pytest
import torch
from torch import nn

from comp.errors import CompError
from comp.io import BackgroundWrites
from comp.training.checkpoint import save_state, snapshot


def test_a_snapshot_keeps_the_state_it_was_taken_from_while_training_changes_the_original():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rows": [{"epoch": 1}], "pair": (1, 2)}
    before = {"weight": model.weight.detach().clone(), "moment": optimizer.state[model.weight]["exp_avg"].clone()}

    taken = snapshot(state)
    optimizer.step()  # moves the weights and the moments in place, as the next training steps do
    state["rows"].append({"epoch": 2})

    assert not torch.equal(model.weight, before["weight"])
    assert torch.equal(taken["model"]["weight"], before["weight"])
    assert torch.equal(taken["optimizer"]["state"][0]["exp_avg"], before["moment"])
    assert taken["rows"] == [{"epoch": 1}] and taken["pair"] == (1, 2)
    assert taken["optimizer"]["param_groups"][0]["lr"] == 0.1


def test_background_writes_run_one_at_a_time_in_order_and_raise_a_failed_ones_error():
    writes, order, first_may_finish = BackgroundWrites(), [], threading.Event()

    def first():
        first_may_finish.wait(timeout=10)
        order.append("first")

    writes.submit(first)
    threading.Timer(0.1, first_may_finish.set).start()
    writes.submit(lambda: order.append("second"))  # waits for the first: one write's data in memory at a time
    assert order[:1] == ["first"]

    def full_disk():
        raise OSError(28, "No space left on device")

    writes.submit(full_disk)
    with pytest.raises(OSError, match="No space left"):
        writes.close()
    assert order == ["first", "second"]


def test_a_checkpoint_whose_folder_cannot_be_made_is_an_error_naming_it(tmp_path):
    (tmp_path / "runs").write_text("a file where the run folder should be")
    with pytest.raises(CompError) as error:
        save_state(tmp_path / "runs/tiny/fold0/last.pt", {"position": {"epoch": 1}})
    assert f"Cannot write {tmp_path}/runs/tiny/fold0/last.pt: Not a directory" in error.value.message
    assert "a writable folder" in error.value.hint
