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
#
# Login: MLflow's basic-auth app (scripts/cluster/mlflow_basic_auth.ini). Its user store is
# ~/mlflow/basic_auth.db; the first start makes the admin user from MLFLOW_TRACKING_USERNAME /
# _PASSWORD (node_auth.sh, from ~/.pix2seqd/mlflow_credentials), the login of every job too.
# A later change of that file does not change a stored password: MLflow's update-password
# API does, or a new head. Users other than the admin see nothing they were not granted.
set -euo pipefail
mkdir -p ~/mlflow
chmod 700 ~/mlflow
PY=~/venv/bin/python
DB=~/mlflow/mlflow.db
$PY ~/pix2seqd/scripts/cluster/mlflow_db.py restore "$DB" "s3://$PIX2SEQD_BUCKET/mlflow-db/mlflow.db"
HEAD_IP=${MLFLOW_TRACKING_URI#http://}; HEAD_IP=${HEAD_IP%:5000}
# the CSRF key of the server's forms, the same for its workers and across restarts
[ -s ~/mlflow/flask_secret ] || (umask 077 && $PY -c "import secrets; print(secrets.token_hex(32))" > ~/mlflow/flask_secret)
pkill -f "mlflow server" || true
cd ~/mlflow  # the auth store's relative path (mlflow_basic_auth.ini) resolves here
MLFLOW_AUTH_CONFIG_PATH=~/pix2seqd/scripts/cluster/mlflow_basic_auth.ini \
MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" \
MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat ~/mlflow/flask_secret)" \
nohup ~/venv/bin/mlflow server --app-name basic-auth \
  --backend-store-uri "sqlite:///$DB" \
  --artifacts-destination "s3://$PIX2SEQD_BUCKET/mlflow" --serve-artifacts \
  --host 0.0.0.0 --port 5000 --workers 2 \
  --allowed-hosts "localhost,localhost:5000,127.0.0.1:5000,$HEAD_IP:5000" \
  --cors-allowed-origins "http://localhost:5000,http://127.0.0.1:5000" \
  > ~/mlflow/server.log 2>&1 &
pkill -f "mlflow_db.py loop" || true
nohup $PY ~/pix2seqd/scripts/cluster/mlflow_db.py loop "$DB" \
  "s3://$PIX2SEQD_BUCKET/mlflow-db/mlflow.db" > ~/mlflow/backup.log 2>&1 &
