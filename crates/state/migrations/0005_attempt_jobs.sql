-- The scheduler job that ran an attempt (`slurm:<id>` for the Slurm executor), so `leo status`
-- shows it and `leo resume` can cancel what a dead engine left queued or running.
ALTER TABLE attempts ADD COLUMN job_id TEXT;
