"""The served model's code file (MLflow "models from code"): MLflow runs this file to get the
pyfunc when it logs and loads the model, so the model is code plus the checkpoint artifact,
never a pickle."""

from mlflow.models import set_model

from pix2seqd.platform.serving.model import PanopticModel

# set_model at import is how a models-from-code file hands MLflow its model
set_model(PanopticModel())
