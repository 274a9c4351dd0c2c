"""The published benchmark (bench/run): this service beside a bare redis-py loop and two peer libraries."""
