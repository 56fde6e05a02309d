"""The pipeline: its steps in the order they run.

Run it with `mlops run`, or `python -m <package>.main --step train_model`.
"""

from mlops_template import Pipeline

from .data.make_data import make_data
from .features.build_features import feat_data
from .models.predict import predict
from .models.train_model import train_model

pipeline = Pipeline([make_data, feat_data, train_model, predict])

if __name__ == "__main__":
    pipeline.main()
