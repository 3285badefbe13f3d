.PHONY: setup demo test lint ui

setup:
	pip install -e ".[dev,spark]"

demo:
	seg-pipeline demo

test:
	python -m pytest

lint:
	ruff check seg_pipeline seg_pipeline_tests bench

ui:
	dagster dev
