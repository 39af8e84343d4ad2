# Sourced by node_env.sh on every node: the MLflow server's basic-auth login and Ray's token
# authentication, from the two files cluster.yaml's file_mounts copy from the laptop:
#   ~/.pix2seqd/mlflow_credentials  `MLFLOW_TRACKING_USERNAME=...` and
#                                   `MLFLOW_TRACKING_PASSWORD=...` lines: exported, so every
#                                   job and worker logs in (start_mlflow.sh makes the admin)
#   ~/.ray/auth_token               the token of `ray get-auth-token --generate`; with
#                                   RAY_AUTH_MODE=token every Ray process requires it
# Returns 1, naming the file, when either is missing or incomplete.

credentials=~/.pix2seqd/mlflow_credentials
# read as text, never run: a password may hold any character but a newline
credential() { sed -n "s/^$1=//p" "$credentials" | head -n 1; }
MLFLOW_TRACKING_USERNAME=$([ -r "$credentials" ] && credential MLFLOW_TRACKING_USERNAME || true)
MLFLOW_TRACKING_PASSWORD=$([ -r "$credentials" ] && credential MLFLOW_TRACKING_PASSWORD || true)
if [ -z "$MLFLOW_TRACKING_USERNAME" ] || [ -z "$MLFLOW_TRACKING_PASSWORD" ]; then
  echo "$credentials: needs MLFLOW_TRACKING_USERNAME=... and MLFLOW_TRACKING_PASSWORD=... lines" >&2
  return 1
fi
if [ ${#MLFLOW_TRACKING_PASSWORD} -lt 12 ]; then  # MLflow's rule for the admin's password
  echo "$credentials: MLFLOW_TRACKING_PASSWORD must have at least 12 characters" >&2
  return 1
fi
export MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD

export RAY_AUTH_MODE=token
if [ ! -s ~/.ray/auth_token ]; then
  echo "$HOME/.ray/auth_token is missing: run \`ray get-auth-token --generate\` before \`ray up\`" >&2
  return 1
fi
