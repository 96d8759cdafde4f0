"""The sidecar's metric names (docs/metrics.md): the one list that the sidecar exports and the operator's
built-in signals query.

A leaf module: it imports nothing from the package, so the sidecar can use it without importing the operator
side, and the signals without importing the sidecar. Counters carry their ``_total`` suffix here (the name as
Prometheus stores it; prometheus_client strips and re-adds it); histograms are the base name, to which
Prometheus appends ``_bucket``, ``_count`` and ``_sum``.
"""

from __future__ import annotations

PREFIX = "modelmonitor_"

# --- traffic ---
REQUESTS = "modelmonitor_requests_total"
REQUEST_ERRORS = "modelmonitor_request_errors_total"
REQUEST_DURATION = "modelmonitor_request_duration_seconds"

# --- features and data quality ---
FEATURE_VALUE = "modelmonitor_feature_value"
FEATURE_REFERENCE = "modelmonitor_feature_reference_ratio"
CATEGORY_COUNT = "modelmonitor_feature_category_total"
CATEGORY_REFERENCE = "modelmonitor_feature_category_reference_ratio"
FEATURE_MISSING = "modelmonitor_feature_missing_total"
SCHEMA_VIOLATIONS = "modelmonitor_schema_violations_total"
FEATURE_OBSERVATIONS = "modelmonitor_feature_observations_total"

# --- predictions ---
PREDICTION_SCORE = "modelmonitor_prediction_score"
PREDICTION_REFERENCE = "modelmonitor_prediction_reference_ratio"
PREDICTION_CLASS = "modelmonitor_prediction_class_total"
PREDICTION_CLASS_REFERENCE = "modelmonitor_prediction_class_reference_ratio"
GROUP_PREDICTIONS = "modelmonitor_group_predictions_total"

# --- labels and quality ---
LABELED_PREDICTIONS = "modelmonitor_labeled_predictions_total"
LABELS_RECEIVED = "modelmonitor_labels_received_total"
PREDICTIONS_EXPIRED = "modelmonitor_predictions_expired_total"
LABELS_PENDING = "modelmonitor_labels_pending"
LABEL_COVERAGE = "modelmonitor_label_coverage_ratio"
#: Predictions stored to wait for a label (they carried a request id): labelCoverage's denominator.
LABEL_PREDICTIONS = "modelmonitor_label_predictions_total"
#: Multiclass: per class (one-vs-rest), joined labels by outcome tp / fp / fn.
CLASS_OUTCOMES = "modelmonitor_class_outcomes_total"
#: Regression: sums of |prediction - label| and (prediction - label)^2 over joined labels, and their count.
REGRESSION_ABSOLUTE_ERROR = "modelmonitor_regression_absolute_error_total"
REGRESSION_SQUARED_ERROR = "modelmonitor_regression_squared_error_total"
REGRESSION_LABELED = "modelmonitor_regression_labeled_predictions_total"
#: Performance before labels: each scored prediction adds its calibrated probability of being correct.
ESTIMATED_CORRECT = "modelmonitor_estimated_correct_total"
ESTIMATED_PREDICTIONS = "modelmonitor_estimated_predictions_total"
#: ... and for estimated precision and recall: positive predictions, the sum of p over them (expected true
#: positives) and the sum of p over all scored predictions (expected positives).
ESTIMATED_POSITIVE_PREDICTIONS = "modelmonitor_estimated_positive_predictions_total"
ESTIMATED_TRUE_POSITIVES = "modelmonitor_estimated_true_positives_total"
ESTIMATED_POSITIVES = "modelmonitor_estimated_positives_total"
#: Maturity cohorts (``--label-maturity``): the outcome counters above, counted for each maturity age m (label
#: ``maturity``, the duration normalized) at the time the prediction turns m old, for labels that joined by then.
MATURED_LABELED_PREDICTIONS = "modelmonitor_matured_labeled_predictions_total"
MATURED_CLASS_OUTCOMES = "modelmonitor_matured_class_outcomes_total"
MATURED_REGRESSION_ABSOLUTE_ERROR = "modelmonitor_matured_regression_absolute_error_total"
MATURED_REGRESSION_SQUARED_ERROR = "modelmonitor_matured_regression_squared_error_total"
MATURED_REGRESSION_LABELED = "modelmonitor_matured_regression_labeled_predictions_total"
#: Labels that joined after their prediction was older than the maturity (never counted for that maturity).
LABELS_LATE = "modelmonitor_labels_late_total"
LABEL_STORE_UP = "modelmonitor_label_store_up"
LABEL_STORE_ERRORS = "modelmonitor_label_store_errors_total"
LABEL_STORE_DROPPED = "modelmonitor_label_store_dropped_total"
LABEL_STORE_QUEUED = "modelmonitor_label_store_queued"
QUALITY = "modelmonitor_quality"
QUALITY_WINDOW_LABELS = "modelmonitor_quality_window_labels"

# --- fairness (per replica) ---
FAIRNESS_GAP = "modelmonitor_fairness_gap"
FAIRNESS_GROUP_RATE = "modelmonitor_fairness_group_rate"
FAIRNESS_GROUP_SAMPLES = "modelmonitor_fairness_group_samples"

# --- drift ---
DRIFT_SCORE = "modelmonitor_drift_score"
DRIFT_THRESHOLD = "modelmonitor_drift_threshold"
PREDICTION_DRIFT_SCORE = "modelmonitor_prediction_drift_score"
WINDOW_ROWS = "modelmonitor_window_rows"

# --- the sidecar itself ---
EVENTS_REJECTED = "modelmonitor_events_rejected_total"
PROFILE_INFO = "modelmonitor_profile_info"

#: The ``feature`` label value of the prediction's calibrated thresholds in ``modelmonitor_drift_threshold``
#: (a name no real feature can take).
PREDICTION_FEATURE = "__prediction__"
#: The ``feature`` label of ``unknown_feature`` violations: unknown names are never turned into label values.
UNKNOWN_FEATURE = "__unknown__"
#: ``predicted`` label values of ``modelmonitor_group_predictions_total``.
PREDICTED_POSITIVE = "positive"
PREDICTED_NEGATIVE = "negative"
#: ``outcome`` label values of ``modelmonitor_class_outcomes_total`` (one-vs-rest per class).
CLASS_OUTCOME_NAMES = ("tp", "fp", "fn")
