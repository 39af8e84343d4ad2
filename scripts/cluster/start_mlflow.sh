#!/bin/bash
# Head node: the MLflow tracking server for the whole cluster (run by cluster.yaml after
# node_env.sh). Backend: SQLite on the head's disk, copied to S3 every 5 minutes and restored
# from there when a new head starts (so `ray down` + `ray up` keeps the runs). Artifacts:
# s3://$PIX2SEQD_BUCKET/mlflow, proxied by the server, so workers upload over HTTP and need
# no bucket rights for MLflow.
#
# Reachable only inside the cluster's security group (port 5000 is not opened to the
# internet); people use `ray attach cluster.yaml -p 5000` or an SSH tunnel. Allowed hosts:
# the head's private IP (workers) and localhost (tunnels); CORS: the tunnelled UI only.
set -euo pipefail
mkdir -p ~/mlflow
PY=~/venv/bin/python
DB=~/mlflow/mlflow.db
$PY ~/pix2seqd/scripts/cluster/mlflow_db.py restore "$DB" "s3://$PIX2SEQD_BUCKET/mlflow-db/mlflow.db"
HEAD_IP=${MLFLOW_TRACKING_URI#http://}; HEAD_IP=${HEAD_IP%:5000}
pkill -f "mlflow server" || true
nohup ~/venv/bin/mlflow server \
  --backend-store-uri "sqlite:///$DB" \
  --artifacts-destination "s3://$PIX2SEQD_BUCKET/mlflow" --serve-artifacts \
  --host 0.0.0.0 --port 5000 --workers 2 \
  --allowed-hosts "localhost,localhost:5000,127.0.0.1:5000,$HEAD_IP:5000" \
  --cors-allowed-origins "http://localhost:5000,http://127.0.0.1:5000" \
  > ~/mlflow/server.log 2>&1 &
pkill -f "mlflow_db.py loop" || true
nohup $PY ~/pix2seqd/scripts/cluster/mlflow_db.py loop "$DB" \
  "s3://$PIX2SEQD_BUCKET/mlflow-db/mlflow.db" > ~/mlflow/backup.log 2>&1 &
