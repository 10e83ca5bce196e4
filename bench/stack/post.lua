-- wrk script: an OpenAI-style chat completion request (~1 KB JSON body) with typical client headers.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0123456789abcdefghijklmnopqrstuvwxyz0123456789"
wrk.headers["User-Agent"] = "OpenAI/Python 1.50.0"
wrk.headers["Accept"] = "application/json"
wrk.headers["X-Majordomo-Key"] = "mdm_0123456789abcdef"
local msgs = {}
for i = 1, 6 do
  msgs[#msgs + 1] = string.format('{"role":"user","content":"Message %d: please summarise the quarterly report in three bullet points, keeping numbers exact."}', i)
end
wrk.body = '{"model":"gpt-4o-mini","messages":[' .. table.concat(msgs, ",") .. '],"temperature":0.2,"max_tokens":256}'
