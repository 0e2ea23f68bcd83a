"""Classify the iris data set with a small decision tree; prints the accuracy."""

from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier


def main() -> None:
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = DecisionTreeClassifier(random_state=0).fit(X_train, y_train)
    print(f"classification-demo: iris test accuracy {model.score(X_test, y_test):.3f}")


if __name__ == "__main__":
    main()
