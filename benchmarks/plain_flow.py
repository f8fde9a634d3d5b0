"""The flow the bench compares the secure run with: what a team writes without this
template. Prefect flow, read the CSV, fit the same model, log it to MLflow, upload
it to S3; no checks. Written the way the libraries' own docs show it.

MLflow and boto3 take their settings from the environment, as a reader's flow
would: MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_CA_BUNDLE (the bench points them at the same tracking
store and the same S3 server as the secure run).
"""

from __future__ import annotations

import io
import time

import boto3
import joblib
import mlflow
import mlflow.sklearn
import pandas as pd
from prefect import flow, task
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from benchmarks.table import CATEGORICAL, NUMERIC

TARGET = "segment"


@task
def load(path: str) -> pd.DataFrame:
    return pd.read_csv(path)


@task
def fit(frame: pd.DataFrame) -> tuple[Pipeline, float]:
    x, y = frame[NUMERIC + CATEGORICAL], frame[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=42, stratify=y
    )
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                CATEGORICAL,
            ),
        ]
    )
    model = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])
    model.fit(x_train, y_train)
    return model, float(model.score(x_test, y_test))


@task
def log_to_mlflow(model: Pipeline, accuracy: float, name: str) -> None:
    mlflow.set_experiment("plain-training")
    with mlflow.start_run():
        mlflow.log_params({"C": 1.0, "max_iter": 1000})
        mlflow.log_metric("accuracy", accuracy)
        mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            skops_trusted_types=["numpy.dtype"],  # as MLflow's error message asks
        )


@task
def upload(model: Pipeline, bucket: str, name: str) -> None:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    key = f"plain/{name}/{int(time.time())}.joblib"
    boto3.client("s3").put_object(  # the bucket refuses objects without SSE
        Bucket=bucket, Key=key, Body=buffer.getvalue(), ServerSideEncryption="AES256"
    )


@flow(name="plain-training")
def plain_training(path: str, bucket: str, name: str = "plain-classifier") -> float:
    frame = load(path)
    model, accuracy = fit(frame)
    log_to_mlflow(model, accuracy, name)
    upload(model, bucket, name)
    return accuracy
