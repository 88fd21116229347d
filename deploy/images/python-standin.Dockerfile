# A stand-in for the official python:3.11-slim (deploy/Dockerfile's base) where no image
# registry is reachable: Debian bookworm's own Python 3.11 on the debootstrap base that
# deploy/containers.sh imports. Only ever tagged locally, never published.
ARG BASE=local/debian:bookworm
FROM ${BASE}
# The official image's pip installs into the system Python; Debian marks its Python as
# externally managed (PEP 668), which only the virtualenv-less image build would trip on.
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -sf /usr/bin/python3 /usr/local/bin/python \
 && ln -sf /usr/bin/pip3 /usr/local/bin/pip
ENV LANG=C.UTF-8
CMD ["python3"]
