"""The model server as the worker sees it: the one HTTP client (client.py) and its options
(client_options.py); one request builder and one reply parser per endpoint (chat_completions.py,
completions.py, tokenization.py for /tokenize and /detokenize); chat messages every template accepts
(chat_messages.py); and the arithmetic on log-probabilities (logprobs.py).

Imports constants and errors only; imported by run/ and pipelines/.
"""
