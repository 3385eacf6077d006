# Prunescope dashboard. Build: docker build -t prunescope .
# Run:   docker run -p 8501:8501 -v prunescope-data:/data prunescope
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PRUNESCOPE_HOME=/data

RUN useradd --create-home --uid 1000 prunescope \
    && mkdir -p /data && chown prunescope:prunescope /data

WORKDIR /app

# Dependencies first, in their own layer, so code changes do not reinstall torch.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=prunescope:prunescope . .

USER prunescope
VOLUME ["/data"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"

CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501"]
