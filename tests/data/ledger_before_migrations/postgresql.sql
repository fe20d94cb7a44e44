-- A postgresql ledger as fairpool wrote it before migrations existed (SQLAlchemy's
-- create_all of that day's schema), with a few rows: the upgrade must keep them.

CREATE TABLE capacity (
	hour TIMESTAMP WITH TIME ZONE NOT NULL,
	node VARCHAR(253) NOT NULL,
	owner VARCHAR(253) NOT NULL,
	gpu_model VARCHAR(253) NOT NULL,
	gpu_seconds_available FLOAT NOT NULL,
	coverage FLOAT NOT NULL,
	PRIMARY KEY (hour, node)
);
CREATE TABLE hours (
	hour TIMESTAMP WITH TIME ZONE NOT NULL,
	status VARCHAR(16) NOT NULL,
	coverage FLOAT,
	attempts INTEGER NOT NULL,
	last_error TEXT,
	metered_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (hour)
);
CREATE TABLE metering_runs (
	id SERIAL NOT NULL,
	started_at TIMESTAMP WITH TIME ZONE NOT NULL,
	finished_at TIMESTAMP WITH TIME ZONE,
	range_start TIMESTAMP WITH TIME ZONE NOT NULL,
	range_end TIMESTAMP WITH TIME ZONE NOT NULL,
	hours_ok INTEGER NOT NULL,
	hours_pending INTEGER NOT NULL,
	mean_coverage FLOAT,
	error TEXT,
	PRIMARY KEY (id)
);
CREATE TABLE policy_versions (
	version INTEGER NOT NULL,
	author VARCHAR(253) NOT NULL,
	applied_at TIMESTAMP WITH TIME ZONE NOT NULL,
	origin VARCHAR(16) NOT NULL,
	comment TEXT NOT NULL,
	document TEXT NOT NULL,
	diff TEXT NOT NULL,
	sha256 VARCHAR(64) NOT NULL,
	PRIMARY KEY (version)
);
CREATE TABLE reclaim_lost (
	hour TIMESTAMP WITH TIME ZONE NOT NULL,
	member VARCHAR(253) NOT NULL,
	gpu_model VARCHAR(253) NOT NULL,
	gpu_seconds_lost FLOAT NOT NULL,
	PRIMARY KEY (hour, member, gpu_model)
);
CREATE TABLE usage (
	hour TIMESTAMP WITH TIME ZONE NOT NULL,
	pod_uid VARCHAR(128) NOT NULL,
	namespace VARCHAR(253) NOT NULL,
	pod VARCHAR(253) NOT NULL,
	job_id VARCHAR(253) NOT NULL,
	member VARCHAR(253) NOT NULL,
	owner VARCHAR(253) NOT NULL,
	gpu_model VARCHAR(253) NOT NULL,
	node VARCHAR(253) NOT NULL,
	gpu_seconds FLOAT NOT NULL,
	utilization FLOAT,
	coverage FLOAT NOT NULL,
	policy_version INTEGER NOT NULL,
	source VARCHAR(32) NOT NULL,
	PRIMARY KEY (hour, pod_uid)
);

INSERT INTO usage VALUES ('2026-10-05 10:00:00+00', 'uid-a', 'lab-bio', 'train-1', 'job-1', 'lab-bio', 'uni-north', 'NVIDIA-H100-80GB-HBM3', 'gpu-1', 14400.0, 0.5, 1.0, 3, 'fairpool');
INSERT INTO usage VALUES ('2026-10-05 10:00:00+00', 'uid-b', 'physics', 'infer-1', 'job-2', 'physics', 'uni-north', 'NVIDIA-H100-80GB-HBM3', 'gpu-1', 3600.0, NULL, 0.9, 3, 'kube-state-metrics');
INSERT INTO capacity VALUES ('2026-10-05 10:00:00+00', 'gpu-1', 'uni-north', 'NVIDIA-H100-80GB-HBM3', 28800.0, 1.0);
INSERT INTO reclaim_lost VALUES ('2026-10-05 10:00:00+00', 'physics', 'NVIDIA-H100-80GB-HBM3', 150.0);
INSERT INTO hours VALUES ('2026-10-05 10:00:00+00', 'metered', 0.95, 1, NULL, '2026-10-05 11:05:00+00');
INSERT INTO hours VALUES ('2026-10-05 11:00:00+00', 'pending', NULL, 2, 'connection refused', NULL);
INSERT INTO metering_runs (started_at, finished_at, range_start, range_end, hours_ok, hours_pending, mean_coverage, error) VALUES ('2026-10-05 11:05:00+00', '2026-10-05 11:05:00+00', '2026-10-05 10:00:00+00', '2026-10-05 11:00:00+00', 1, 1, 0.95, NULL);
INSERT INTO policy_versions VALUES (1, 'alice', '2026-10-05 11:05:00+00', 'bootstrap', '', 'apiVersion: fairpool.io/v1', '', '0000000000000000000000000000000000000000000000000000000000000000');
