from openai import OpenAI  # the openai client, unchanged

client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")  # api_key: serve's --token, if it has one
chat = client.chat.completions.create(model="tiny-chat", temperature=0, stream=True,
                                      messages=[{"role": "user", "content": "Who are you?"}])
print("".join(chunk.choices[0].delta.content or "" for chunk in chat))
