# The web worker and task worker image. Slim, non-root, pinned base.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY core ./core
COPY ops ./ops
COPY accounts ./accounts
COPY chat ./chat
COPY streaming ./streaming
COPY notifications ./notifications
COPY tasks ./tasks
COPY room_assistant ./room_assistant
COPY web ./web
COPY manage.py ./
COPY deploy/web-server.sh ./deploy/web-server.sh
# The base image's pip and setuptools have published advisories (docs/security.md, finding 10).
RUN pip install --no-compile --upgrade pip setuptools wheel \
    && pip install --no-compile . \
    && useradd --system --uid 10001 --home /app app \
    && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R app /app
USER app
EXPOSE 8000
# daphne, or uvicorn with WEB_SERVER=uvicorn (docker-compose.yml passes it through).
CMD ["deploy/web-server.sh"]
