package serve_test

import (
	"context"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/serve"
)

// The official OpenAI Go SDK streams a chat completion (and a completion) from the server, with
// an API key, and gets Engine.Generate's greedy text and the usage counts.
func TestOpenAIGoSDK(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	msgs := []chat.Message{{Role: chat.System, Content: "You tell stories."}, {Role: chat.User, Content: "Once upon a time"}}
	ids, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	ref := generate(t, e, engine.Request{PromptIDs: ids, MaxTokens: 48, Sampling: sample.GreedyParams()})
	refText := generate(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 48, Sampling: sample.GreedyParams()})
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{APIKey: "sk-test", ModelName: "stories260K"})

	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := context.Background()

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "stories260K",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(msgs[0].Content), openai.UserMessage(msgs[1].Content)},
		MaxTokens:     openai.Int(48),
		Temperature:   openai.Float(0),
		Seed:          openai.Int(1),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())
	require.Greater(t, chunks, 3)
	require.Len(t, acc.Choices, 1)
	want := ref.text
	if len(want) > 0 && want[0] == ' ' {
		want = want[1:]
	}
	require.Equal(t, want, acc.Choices[0].Message.Content)
	require.Equal(t, ref.reason, acc.Choices[0].FinishReason)
	require.EqualValues(t, len(ids), acc.Usage.PromptTokens)
	require.EqualValues(t, ref.tokens, acc.Usage.CompletionTokens)

	// The same request, not streamed.
	whole, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "stories260K",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(msgs[0].Content), openai.UserMessage(msgs[1].Content)},
		MaxTokens:   openai.Int(48),
		Temperature: openai.Float(0),
	})
	require.NoError(t, err)
	require.Equal(t, want, whole.Choices[0].Message.Content)

	// Legacy completions, streamed.
	cs := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:       "stories260K",
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:   openai.Int(48),
		Temperature: openai.Float(0),
	})
	text := ""
	for cs.Next() {
		for _, c := range cs.Current().Choices {
			text += c.Text
		}
	}
	require.NoError(t, cs.Err())
	require.Equal(t, refText.text, text)

	// Models list, and a wrong key.
	models, err := client.Models.List(ctx)
	require.NoError(t, err)
	require.Len(t, models.Data, 1)
	require.Equal(t, "stories260K", models.Data[0].ID)
	bad := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	_, err = bad.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "x", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 401, apiErr.StatusCode)
	require.Equal(t, "invalid_api_key", apiErr.Code)
}

// The SDK reads logprobs, frequency_penalty and presence_penalty as OpenAI defines them.
func TestOpenAIGoSDKLogprobsAndPenalties(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{ModelName: "stories260K"})
	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithMaxRetries(0))
	ctx := context.Background()

	whole, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "stories260K",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Once upon a time")},
		MaxTokens:   openai.Int(24),
		Temperature: openai.Float(0),
		Logprobs:    openai.Bool(true),
		TopLogprobs: openai.Int(3),
	})
	require.NoError(t, err)
	content := whole.Choices[0].Logprobs.Content
	require.Len(t, content, int(whole.Usage.CompletionTokens))
	for _, c := range content {
		require.Len(t, c.TopLogprobs, 3)
		require.Equal(t, c.Token, c.TopLogprobs[0].Token)
		require.LessOrEqual(t, c.Logprob, 0.0)
	}

	cmpl, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:            "stories260K",
		Prompt:           openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:        openai.Int(24),
		Temperature:      openai.Float(0),
		Logprobs:         openai.Int(2),
		FrequencyPenalty: openai.Float(1.5),
	})
	require.NoError(t, err)
	lp := cmpl.Choices[0].Logprobs
	require.Len(t, lp.Tokens, int(cmpl.Usage.CompletionTokens))
	require.Len(t, lp.TopLogprobs, len(lp.Tokens))
	sp := sample.GreedyParams()
	sp.FrequencyPenalty, sp.RepeatLastN = 1.5, 64
	want := generate(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 24, Sampling: sp})
	require.Equal(t, want.text, cmpl.Choices[0].Text)
}
