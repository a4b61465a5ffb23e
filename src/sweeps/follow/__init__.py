"""The methodology as a loop (`python -m sweeps.run STUDY_FILE --follow`): diagnose a study on
its development rows, write the remedy as the next study file, run it, keep it only when it is
better by more than the folds' noise, and stop when nothing more helps."""
