# moto's S3 server, the S3 store of the compose test where MinIO's image cannot be pulled.
# moto comes from PyPI in a build stage (which alone sees this machine's extra CAs).
FROM python:3.11-slim AS build
ARG EXTRA_CA_CERTS=""
RUN printf '%s\n' "$EXTRA_CA_CERTS" > /tmp/extra-ca.pem \
 && cat /etc/ssl/certs/ca-certificates.crt /tmp/extra-ca.pem > /tmp/ca-bundle.pem \
 && PIP_CERT=/tmp/ca-bundle.pem pip wheel --no-cache-dir --wheel-dir /wheels 'moto[server]==5.2.5'

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 65534:65534
EXPOSE 5000
ENTRYPOINT ["moto_server", "--host", "0.0.0.0"]
CMD ["--port", "5000"]
