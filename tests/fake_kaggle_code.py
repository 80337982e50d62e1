"""The fake Kaggle's datasets, kernels and code submissions (tests/fake_kaggle.py serves them).

What it answers, as the real API does for the official client:
- blobs.BlobApiService/StartBlobUpload: a token and an upload URL; the PUT's bytes are kept as their sha256;
- datasets.DatasetApiService/GetDatasetStatus (BLOBS_RECEIVED `pending_dataset_polls` times, then READY),
  GetDataset (currentVersionNumber), CreateDataset, CreateDatasetVersion: every file token must have
  been uploaded; a dataset of `foreign` (another account's) answers 403 to writes;
- kernels.KernelsApiService/SaveKernel (its dataset and competition sources must exist),
  GetKernelSessionStatus (RUNNING `running_polls` times, then `outcome`), ListKernelSessionOutput
  (`output` files, served under /outputs/, and `log`);
- competitions.CompetitionApiService/CreateCodeSubmission: a submission of the kernel version's
  output submission.csv, scored by GetSubmission like any other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass
class FakeDataset:
    ref: str
    versions: list[dict[str, str]] = field(default_factory=list)  # file name -> sha256, per version
    polls: int = 0


@dataclass
class FakeKernel:
    ref: str
    versions: list[dict] = field(default_factory=list)  # the SaveKernel request bodies
    polls: int = 0


def _error(code: int, message: str) -> tuple[int, dict, None]:
    return code, {"code": code, "message": message}, None


@dataclass
class FakeCode:
    datasets: dict[str, FakeDataset] = field(default_factory=dict)
    kernels: dict[str, FakeKernel] = field(default_factory=dict)
    foreign: set[str] = field(default_factory=set)  # dataset refs that exist and belong to another account
    competitions: set[str] = field(default_factory=lambda: {"fake-comp"})
    pending_dataset_polls: int = 1
    running_polls: int = 1
    outcome: str = "COMPLETE"  # or ERROR
    failure_message: str = ""
    output: dict[str, bytes] = field(default_factory=dict)  # what a run writes to /kaggle/working
    log: str = "[]"
    owner: str = "fake-user"  # the account of the fake's credentials
    submitted: list[tuple[str, int, int]] = field(default_factory=list)  # (kernel, version, submission ref)
    blobs: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # token -> (file name, sha256)

    def handle(self, fake, method: str, body: dict) -> tuple[int, dict | None, str | None] | None:
        """The answer to a method of datasets, kernels, blobs or code submissions; None for any other."""
        handler = getattr(self, f"_{method}", None)
        return handler(fake, body) if handler else None

    # ------------------------------------------------------------------------- blobs and datasets

    def _StartBlobUpload(self, fake, body):  # noqa: N802 - named as the API's method
        token = f"blob{len(self.blobs) + 1}"
        self.blobs[token] = (body.get("name", ""), None)
        return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, None

    def receive(self, token: str, stream, length: int) -> bool:
        """The PUT of a dataset file: read in chunks, kept as its sha256 (datasets can be large)."""
        if token not in self.blobs:
            return False
        digest, left = hashlib.sha256(), length
        while left > 0:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        self.blobs[token] = (self.blobs[token][0], digest.hexdigest() if left == 0 else None)
        return True

    def _files(self, fake, files: list[dict]) -> dict[str, str] | None:
        found = {}
        for entry in files:
            name, digest = self.blobs.get(entry.get("token", ""), ("", None))
            if digest is None:
                return None
            found[name] = digest
        return found

    def _GetDatasetStatus(self, fake, body):  # noqa: N802
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref in self.foreign:
            return 200, {"status": "READY"}, None
        dataset = self.datasets.get(ref)
        if dataset is None:
            return _error(404, f"Dataset {ref} not found")
        dataset.polls += 1
        return 200, {"status": "READY" if dataset.polls > self.pending_dataset_polls else "BLOBS_RECEIVED"}, None

    def _GetDataset(self, fake, body):  # noqa: N802
        dataset = self.datasets.get(f"{body.get('ownerSlug')}/{body.get('datasetSlug')}")
        if dataset is None:
            return _error(404, "Dataset not found")
        return 200, {"ref": dataset.ref, "currentVersionNumber": len(dataset.versions)}, None

    def _CreateDataset(self, fake, body):  # noqa: N802
        ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
        if body.get("ownerSlug") != self.owner or ref in self.foreign:
            return _error(403, "Permission 'datasets.create' was denied")
        files = self._files(fake, body.get("files") or [])
        if files is None:
            return _error(400, "A file was not uploaded")
        self.datasets[ref] = FakeDataset(ref, [files])
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "Ok"}, None

    def _CreateDatasetVersion(self, fake, body):  # noqa: N802
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if body.get("ownerSlug") != self.owner or ref in self.foreign:
            return _error(403, "Permission 'datasets.update' was denied")
        if ref not in self.datasets:
            return _error(404, f"Dataset {ref} not found")
        files = self._files(fake, (body.get("body") or {}).get("files") or [])
        if files is None:
            return _error(400, "A file was not uploaded")
        self.datasets[ref].versions.append(files)
        self.datasets[ref].polls = 0
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "Ok"}, None

    # ------------------------------------------------------------------------- kernels

    def _SaveKernel(self, fake, body):  # noqa: N802
        ref = body.get("slug", "")
        if ref.split("/")[0] != self.owner:
            return _error(403, "Permission 'kernels.create' was denied")
        missing = [d for d in body.get("datasetDataSources") or [] if d not in self.datasets]
        missing += [c for c in body.get("competitionDataSources") or [] if c not in self.competitions]
        if missing:
            return 200, {"error": f"Invalid data sources: {', '.join(missing)}"}, None
        kernel = self.kernels.setdefault(ref, FakeKernel(ref))
        kernel.versions.append(body)
        kernel.polls = 0
        version = len(kernel.versions)
        return 200, {"ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}", "versionNumber": version}, None

    def _kernel(self, body) -> FakeKernel | None:
        return self.kernels.get(f"{body.get('userName')}/{body.get('kernelSlug')}")

    def _GetKernelSessionStatus(self, fake, body):  # noqa: N802
        kernel = self._kernel(body)
        if kernel is None:
            return _error(404, "Kernel not found")
        kernel.polls += 1
        if kernel.polls <= self.running_polls:
            return 200, {"status": "RUNNING"}, None
        return 200, {"status": self.outcome, "failureMessage": self.failure_message}, None

    def _ListKernelSessionOutput(self, fake, body):  # noqa: N802
        kernel = self._kernel(body)
        if kernel is None:
            return _error(404, "Kernel not found")
        slug = kernel.ref.split("/")[1]
        files = [{"fileName": name, "url": f"http://localhost/outputs/{slug}/{name}"} for name in self.output]
        return 200, {"files": files, "log": self.log}, None

    def output_file(self, path: str) -> bytes | None:
        """The content behind an /outputs/<slug>/<name> URL."""
        name = path.rsplit("/", 1)[-1]
        return self.output.get(name)

    # ------------------------------------------------------------------------- code submissions

    def _CreateCodeSubmission(self, fake, body):  # noqa: N802
        from fake_kaggle import FakeSubmission

        ref = f"{body.get('kernelOwner', self.owner)}/{body.get('kernelSlug')}"
        kernel = self.kernels.get(ref)
        version = int(body.get("kernelVersion") or (len(kernel.versions) if kernel else 0))
        if kernel is None or not 1 <= version <= len(kernel.versions):
            return _error(404, f"Kernel {ref} version {version} not found")
        if self.outcome != "COMPLETE" or body.get("fileName") not in self.output:
            return _error(400, f"The kernel's output has no {body.get('fileName')}")
        content = self.output[body["fileName"]]
        sub = FakeSubmission(
            1000 + len(fake.submissions), body["fileName"], body.get("submissionDescription", ""), content
        )
        self.submitted.append((ref, version, sub.ref))
        fake.submissions.append(sub)
        return 200, {"message": "Your submission was queued", "ref": sub.ref}, None
