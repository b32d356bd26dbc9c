-- Replay the log into a new version of the same code: a new
-- spec.reprocessNonce (the time, in seconds).
obj.spec.reprocessNonce = "argocd-" .. os.time()
return obj
