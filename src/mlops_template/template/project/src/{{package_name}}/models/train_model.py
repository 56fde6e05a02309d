"""Train a classifier, evaluate it on a held-out split, and put it to the approval gate."""

from mlops_template import StepContext
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from ..lib.evaluation import classification_metrics, confusion_matrix_figure


def train_model(ctx: StepContext) -> None:
    target, seed = ctx.params["target"], ctx.params["seed"]
    df = ctx.read("featurized", context="training")
    train, test = train_test_split(df, test_size=ctx.params["test_size"], stratify=df[target], random_state=seed)
    ctx.write("train", train)
    ctx.write("test", test)  # predict's default input: rows the model has not seen

    X, y = train.drop(columns=[target]), train[target]
    model = DecisionTreeClassifier(max_depth=ctx.params["max_depth"], random_state=seed).fit(X, y)

    X_test, y_test = test.drop(columns=[target]), test[target]
    predicted = model.predict(X_test)
    ctx.log_figure(confusion_matrix_figure(y_test, predicted, labels=model.classes_), "confusion_matrix.png")
    ctx.propose_model(model, input_example=X.head(5), metrics=classification_metrics(y_test, predicted))
