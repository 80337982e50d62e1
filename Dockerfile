# comp on a GPU box; docs/docker.md has the build and run commands.
#
# The official PyTorch CUDA runtime image brings torch, torchvision, CUDA and cuDNN. CUDA 12.6 runs
# on drivers >= 525 (CUDA 12 minor-version compatibility). Blackwell GPUs (sm_100, sm_120) need a
# CUDA 12.8+ build, e.g. --build-arg BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.2-cudnn9-runtime
# (driver >= 580).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    HOME=/home/comp

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependency layer, rebuilt only when pyproject.toml changes: the project's metadata around an empty
# package. The image's own torch and torchvision are held as constraints, so a dependency range they
# do not satisfy fails the build instead of pulling a second torch from PyPI. The stub's build output
# is removed: setuptools would keep its empty __init__.py over the real, older-dated one.
WORKDIR /opt/comp
COPY pyproject.toml ./
RUN mkdir comp && touch comp/__init__.py \
    && pip freeze | grep -E '^(torch|torchvision)==' > base-image-torch.txt \
    && pip install --no-cache-dir --constraint base-image-torch.txt . \
    && rm -rf comp build comp.egg-info

# The package itself: a source change reinstalls comp alone, and the build fails if it cannot start.
COPY comp/ comp/
RUN pip install --no-cache-dir --no-deps . \
    && comp --version

# A non-root user. Build with --build-arg UID=$(id -u) --build-arg GID=$(id -g) so that what it
# writes into the mounted folders belongs to you on the host. Declared after the install layers so
# that changing them keeps those layers cached. --non-unique: the base image may already have a user
# with this UID (ubuntu, 1000), which is also why HOME is set above rather than looked up by UID.
ARG UID=1000
ARG GID=1000
RUN groupadd --non-unique --gid "${GID}" comp \
    && useradd --non-unique --no-log-init --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash comp \
    && mkdir -p /workspace/data /workspace/runs /workspace/folds /workspace/submissions /home/comp/.kaggle \
    && chown -R comp:comp /workspace /home/comp

# data/, runs/, folds/, submissions/ and configs/ are mounted here. comp carries its default config and
# recipes inside the package, so `comp demo` runs with no mounts; a mounted configs/default.yaml takes
# the packaged default's place. Kaggle credentials come from the environment or a mounted
# /home/comp/.kaggle/kaggle.json, never from the image.
WORKDIR /workspace
USER ${UID}:${GID}

ENTRYPOINT ["comp"]
CMD ["--help"]
