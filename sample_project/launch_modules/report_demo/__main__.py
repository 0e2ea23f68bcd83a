from report_demo.scores import score_models
from tabulate import tabulate


def main() -> None:
    rows = score_models()
    print("report-demo:")
    print(tabulate(rows, headers=["model", "accuracy"], floatfmt=".3f"))


main()
