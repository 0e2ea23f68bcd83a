"""Cluster three generated blobs with k-means; prints the cluster sizes."""

from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs


def main() -> None:
    X, _ = make_blobs(n_samples=300, centers=3, random_state=42)
    labels = KMeans(n_clusters=3, n_init=10, random_state=42).fit_predict(X)
    sizes = sorted(int((labels == k).sum()) for k in range(3))
    print(f"clustering-demo: cluster sizes {sizes}")


if __name__ == "__main__":
    main()
