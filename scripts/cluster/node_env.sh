# Sourced by cluster.yaml's start commands on every node, before `ray start`: the variables
# exported here reach every Ray process of the node, hence every job, trial and worker.
#
#   PIX2SEQD_BUCKET      the cluster's S3 bucket (default pix2seqd-<account id>-<region>;
#                        set it in cluster.yaml's start commands to use another)
#   PIX2SEQD_STORAGE     default Ray Train storage path: checkpoints every node can read
#   MLFLOW_TRACKING_URI  the head's MLflow server, by private IP (never a local SQLite file)
#   MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
#                        the server's basic-auth login, read from ~/.pix2seqd/mlflow_credentials
#                        (copied from the laptop by cluster.yaml's file_mounts)
#   RAY_AUTH_MODE=token  Ray's token authentication; the token is ~/.ray/auth_token (also a
#                        file mount), the same on every node and on the laptop
#
# AWS credentials come from the instance profile; none is written anywhere.
set -euo pipefail

imds() {  # IMDSv2 metadata lookup
  local token
  token=$(curl -sfX PUT http://169.254.169.254/latest/api/token \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
  curl -sfH "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$(imds placement/region)}"
if [ -z "${PIX2SEQD_BUCKET:-}" ]; then
  account=$(imds identity-credentials/ec2/info | ~/venv/bin/python -c "import json, sys; print(json.load(sys.stdin)['AccountId'])")
  export PIX2SEQD_BUCKET="pix2seqd-${account}-${AWS_DEFAULT_REGION}"
fi
export PIX2SEQD_STORAGE="s3://${PIX2SEQD_BUCKET}/ray_results"
# RAY_HEAD_IP is set by the autoscaler on worker nodes; the head uses its own private IP
export MLFLOW_TRACKING_URI="http://${RAY_HEAD_IP:-$(imds local-ipv4)}:5000"

# MLflow login and Ray token. Explicit `return`: set -e does not act in a file sourced on
# the left of `&&`, as the start commands do.
source ~/pix2seqd/scripts/cluster/node_auth.sh || return 1
set +euo pipefail
